package dmuser

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// stageData is how much response data a kernelEnd takes in the same read
// as the response header; the rest of a larger response is read straight
// into the request's buffer.
const stageData = 64 << 10

// kernelEnd is the emulation's side of one channel socketpair. Its
// descriptor is blocking: only its channel goroutine uses it, and it waits
// in recvmsg like a kernel thread instead of going through the netpoller
// for every response. Teardown wakes it with shutdown(2); the os.File keeps
// the descriptor alive until the blocked call has returned, so the number
// cannot be reused under it. Reads and writes go through os.File so that
// the race detector sees the hand-off to the daemon's side.
type kernelEnd struct {
	f     *os.File
	stage []byte // request bytes to send; response header + first data
}

func newKernelEnd(fd int, name string) *kernelEnd {
	return &kernelEnd{f: os.NewFile(uintptr(fd), name), stage: make([]byte, HeaderSize+stageData)}
}

// shutdown wakes any blocked I/O on the socket (the daemon then sees EOF).
func (k *kernelEnd) shutdown() {
	if rc, err := k.f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RDWR) })
	}
}

func (k *kernelEnd) close() { k.f.Close() }

// send writes the request header and payload with one write.
func (k *kernelEnd) send(h Header, payload []byte) error {
	n := HeaderSize + len(payload)
	if cap(k.stage) < n {
		k.stage = make([]byte, n)
	}
	b := k.stage[:n]
	h.put(b)
	copy(b[HeaderSize:], payload)
	_, err := k.f.Write(b)
	return err
}

// recvHeader reads the response header into hb and, in the same read, up to
// stageData bytes of data into data (a read's destination; nil otherwise).
// It never reads past HeaderSize+len(data). It returns how many data bytes
// arrived.
func (k *kernelEnd) recvHeader(hb *[HeaderSize]byte, data []byte) (int, error) {
	b := k.stage[:HeaderSize+min(len(data), stageData)]
	got := 0
	for got < HeaderSize {
		n, err := k.f.Read(b[got:])
		got += n
		if err != nil {
			if err == io.EOF && got > 0 {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
	}
	copy(hb[:], b)
	return copy(data, b[HeaderSize:got]), nil
}

// recvData reads the rest of a read response into p.
func (k *kernelEnd) recvData(p []byte) error {
	_, err := io.ReadFull(k.f, p)
	return err
}
