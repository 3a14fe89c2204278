package dmuser

import (
	"bufio"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// stageData is the kernel side's receive buffer beyond one header: small
// responses (and several back-to-back ones) arrive in one read; the rest of
// a larger response is read straight into the request's buffer.
const stageData = 64 << 10

// kernelEnd is the emulation's side of one channel (an in-process pipe, or
// a socketpair with EmulatorOptions.Socketpair), used by the channel's send
// and receive goroutines. Teardown wakes them with shutdown (the daemon then
// sees EOF) rather than closing the channel under them; the receive
// goroutine closes it on exit. (For the socketpair, a blocking descriptor
// measured slower than Go's netpoller: 100k small reads cost ~2.0 CPU-s
// against ~0.95.)
type kernelEnd struct {
	rw    io.ReadWriter
	buf   bool   // reads go through a bufio.Reader (sockets: fewer system calls)
	shut  func() // wake blocked I/O; the daemon then sees EOF
	done  func() // release the end
	stage []byte // request bytes being sent
}

func newKernelEnd(fd int, name string) *kernelEnd {
	f := os.NewFile(uintptr(fd), name)
	return &kernelEnd{rw: f, buf: true, stage: make([]byte, HeaderSize),
		shut: func() {
			if rc, err := f.SyscallConn(); err == nil {
				rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RDWR) })
			}
		},
		done: func() { f.Close() },
	}
}

func newMemKernelEnd(m *memEnd) *kernelEnd {
	return &kernelEnd{rw: m, stage: make([]byte, HeaderSize), shut: m.shutdown, done: m.shutdown}
}

// shutdown wakes any blocked I/O on the channel (the daemon then sees EOF).
func (k *kernelEnd) shutdown() { k.shut() }

func (k *kernelEnd) close() { k.done() }

// reader returns what recvLoop reads responses from.
func (k *kernelEnd) reader() io.Reader {
	if k.buf {
		return bufio.NewReaderSize(k.rw, HeaderSize+stageData)
	}
	return k.rw
}

// send writes the request header and payload with one write.
func (k *kernelEnd) send(h Header, payload []byte) error {
	n := HeaderSize + len(payload)
	if cap(k.stage) < n {
		k.stage = make([]byte, n)
	}
	b := k.stage[:n]
	h.put(b)
	copy(b[HeaderSize:], payload)
	_, err := k.rw.Write(b)
	return err
}

// daemonEnd is the channel end handed to the daemon: the socket, read
// through a buffer. Unlike a dm-user node, whose read() returns at most one
// message, the socketpair is a byte stream on which the emulation queues up
// to Depth messages, so one read can take several request headers.
// Only Read, Write and Close are exposed, so that nothing (io.Copy's
// WriteTo fast path, say) can read around the buffer.
type daemonEnd struct {
	f *os.File
	r *bufio.Reader
}

func newDaemonEnd(f *os.File) *daemonEnd {
	return &daemonEnd{f: f, r: bufio.NewReaderSize(f, 4096)}
}

// Read reads through the buffer; reads larger than it go straight to the
// socket once it is empty.
func (d *daemonEnd) Read(p []byte) (int, error)  { return d.r.Read(p) }
func (d *daemonEnd) Write(p []byte) (int, error) { return d.f.Write(p) }
func (d *daemonEnd) Close() error                { return d.f.Close() }
