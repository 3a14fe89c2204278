package dmuser

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// EmulatorOptions configures a Target. The zero value gives one channel,
// 1 MiB requests, no random splitting and 128 messages in flight.
type EmulatorOptions struct {
	// Channels is how many control-node opens to emulate (daemon worker
	// loops). Default 1.
	Channels int
	// MaxRequest is the largest request in bytes (the queue's max_sectors),
	// rounded down to whole sectors. Default 1 MiB.
	MaxRequest int
	// Split, if non-nil, cuts every I/O at random sector boundaries into
	// pieces of 1..MaxRequest bytes, as the block layer does when it splits
	// bios at segment, chunk or device limits. Guarded internally.
	Split *rand.Rand
	// InFlight bounds the outstanding messages (dm-user's message mempool:
	// MAX_OUTSTANDING_MESSAGES = 128). Default 128.
	InFlight int
	// Depth is how many messages one channel hands to the daemon before
	// the oldest is answered: a daemon's read() returns the next queued
	// message at once, and responses are matched to messages by seq, as
	// dm-user does. Default 4; 1 hands out one message at a time.
	Depth int
	// Socketpair carries each channel over a SOCK_STREAM socketpair (the
	// daemon then reads and writes a descriptor, with a system call per
	// read and write as on /dev/dm-user) instead of the default in-process
	// pipe, whose bytes are the same but which costs no system calls, so
	// that measurements through the emulation show the daemon rather than
	// the emulation.
	Socketpair bool
	// Lenient accepts responses whose sector/len differ from the request,
	// as the real module does (it matches on seq only). By default such a
	// response fails the request and is recorded as a violation.
	Lenient bool
}

// IOError is a request the daemon answered with a non-success status, or
// that failed because of a protocol violation on its channel.
type IOError struct {
	Header Header // the request
	Status Status // response status; meaningful when Msg is empty
	Msg    string // protocol violation, if any
}

func (e *IOError) Error() string {
	if e.Msg != "" {
		return fmt.Sprintf("dmuser emulation: %s %v: %s", Type(e.Header.Type), e.Header, e.Msg)
	}
	return fmt.Sprintf("dmuser emulation: %s %v: daemon answered %s", Type(e.Header.Type), e.Header, e.Status)
}

// Target emulates the kernel side of one dm-user target: a block device of
// a fixed size whose I/O is turned into dm_user_message requests and
// handed to whichever channel has room (Depth messages), as dm-user does. Each
// channel is an in-process byte pipe (or a SOCK_STREAM socketpair, see
// EmulatorOptions.Socketpair); the daemon gets the other ends.
//
// Target methods are safe for concurrent use.
type Target struct {
	size    int64
	opts    EmulatorOptions
	seq     atomic.Uint64
	queue   chan *message // capacity InFlight; never blocks under sem
	sem     chan struct{} // one token per outstanding message
	gone    chan struct{} // closed by Close
	kernel  []*kernelEnd  // kernel-side ends, shut down by Close
	wg      sync.WaitGroup
	perChan []atomic.Int64 // messages completed per channel

	splitMu sync.Mutex // guards opts.Split

	mu         sync.Mutex // guards the fields that follow
	dead       bool       // torn down or every channel broken
	alive      int        // channel goroutines still running
	violations []error
}

type message struct {
	hdr  Header
	buf  []byte // read destination or write payload
	done chan error
}

// NewTarget creates an emulated target of size bytes (a multiple of 512)
// and returns the daemon-side channel ends, which the caller hands to a
// Server (which then owns and closes them).
func NewTarget(size int64, opts *EmulatorOptions) (*Target, []Channel, error) {
	var o EmulatorOptions
	if opts != nil {
		o = *opts
	}
	if size < 0 || size%SectorSize != 0 {
		return nil, nil, fmt.Errorf("dmuser emulation: size %d is not a non-negative multiple of %d", size, SectorSize)
	}
	if o.Channels <= 0 {
		o.Channels = 1
	}
	if o.MaxRequest <= 0 {
		o.MaxRequest = 1 << 20
	}
	o.MaxRequest -= o.MaxRequest % SectorSize
	if o.MaxRequest == 0 {
		o.MaxRequest = SectorSize
	}
	if o.InFlight <= 0 {
		o.InFlight = 128
	}
	if o.Depth <= 0 {
		o.Depth = 4
	}
	t := &Target{
		size:    size,
		opts:    o,
		queue:   make(chan *message, o.InFlight),
		sem:     make(chan struct{}, o.InFlight),
		gone:    make(chan struct{}),
		perChan: make([]atomic.Int64, o.Channels),
	}
	var daemon []Channel
	for i := range o.Channels {
		if !o.Socketpair {
			k, d := newMemChannel()
			t.kernel = append(t.kernel, newMemKernelEnd(k))
			daemon = append(daemon, d)
			continue
		}
		// Both ends are non-blocking (pollable), so that closing the
		// daemon's end interrupts its reads (Server.Run cancellation).
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			for _, k := range t.kernel {
				k.close()
			}
			for _, c := range daemon {
				c.Close()
			}
			return nil, nil, os.NewSyscallError("socketpair", err)
		}
		t.kernel = append(t.kernel, newKernelEnd(fds[0], fmt.Sprintf("dm-user-emu-kernel-%d", i)))
		daemon = append(daemon, newDaemonEnd(os.NewFile(uintptr(fds[1]), fmt.Sprintf("dm-user-emu-%d", i))))
	}
	t.alive = o.Channels
	for i, k := range t.kernel {
		c := &channel{i: i, k: k, tokens: make(chan struct{}, o.Depth), inflight: map[uint64]*message{},
			broken: make(chan struct{}), sent: make(chan struct{})}
		t.wg.Go(func() { t.sendLoop(c) })
		t.wg.Go(func() { t.recvLoop(c) })
	}
	return t, daemon, nil
}

// Size returns the device size in bytes.
func (t *Target) Size() int64 { return t.size }

// MessagesPerChannel returns how many messages each channel completed.
func (t *Target) MessagesPerChannel() []int64 {
	out := make([]int64, len(t.perChan))
	for i := range t.perChan {
		out[i] = t.perChan[i].Load()
	}
	return out
}

// Violations returns the protocol violations seen so far (bad seq, short
// response, mismatching echo fields).
func (t *Target) Violations() []error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]error(nil), t.violations...)
}

// Close tears the target down like removing the device-mapper table:
// queued messages fail with ErrTargetGone, messages a channel already
// handed out fail as soon as their channel breaks, and the daemon's reads
// see end-of-file. Close waits for the kernel-side goroutines.
func (t *Target) Close() error {
	t.mu.Lock()
	already := t.dead
	t.dead = true
	t.drainLocked()
	t.mu.Unlock()
	if !already {
		close(t.gone)
		for _, k := range t.kernel {
			k.shutdown()
		}
	}
	t.wg.Wait()
	return nil
}

// drainLocked fails every queued message.
func (t *Target) drainLocked() {
	for {
		select {
		case m := <-t.queue:
			t.complete(m, ErrTargetGone)
		default:
			return
		}
	}
}

func (t *Target) violation(err error) {
	t.mu.Lock()
	t.violations = append(t.violations, err)
	t.mu.Unlock()
}

// channel is the kernel side of one control-node open: sendLoop hands
// queued messages to the daemon (up to Depth at a time) and recvLoop
// completes them as their responses arrive.
type channel struct {
	i      int
	k      *kernelEnd
	tokens chan struct{} // one per message handed out and not yet answered
	broken chan struct{} // closed by recvLoop when the channel ends
	sent   chan struct{} // closed when sendLoop has returned

	mu       sync.Mutex
	dead     bool                // set with broken; no new messages after it
	inflight map[uint64]*message // handed out, by seq
}

// sendLoop takes the next queued message whenever the channel has room and
// writes it to the daemon.
func (t *Target) sendLoop(c *channel) {
	defer close(c.sent)
	for {
		select {
		case c.tokens <- struct{}{}:
		case <-c.broken:
			return
		case <-t.gone:
			return
		}
		var m *message
		select {
		case m = <-t.queue:
		case <-c.broken:
			return
		case <-t.gone:
			return
		}
		c.mu.Lock()
		if c.dead {
			c.mu.Unlock()
			t.complete(m, fmt.Errorf("%w: channel %d broken", ErrTargetGone, c.i))
			return
		}
		c.inflight[m.hdr.Seq] = m
		c.mu.Unlock()
		var payload []byte
		if Type(m.hdr.Type).hasPayload() {
			payload = m.buf
		}
		if err := c.k.send(m.hdr, payload); err != nil {
			// The daemon end is gone; recvLoop sees it too and fails m.
			c.k.shutdown()
			return
		}
	}
}

// recvLoop reads responses and completes their messages. Any error ends
// the channel: its outstanding messages fail.
func (t *Target) recvLoop(c *channel) {
	err := t.receive(c, c.k.reader())
	c.mu.Lock()
	c.dead = true
	rest := c.inflight
	c.inflight = nil
	c.mu.Unlock()
	close(c.broken)
	c.k.shutdown()
	var ioe *IOError
	violation := errors.As(err, &ioe) && ioe.Msg != ""
	for _, m := range rest {
		if violation {
			// from_user_error: every message of the broken channel fails.
			t.complete(m, &IOError{Header: m.hdr, Msg: "channel broken: " + ioe.Msg})
		} else {
			t.complete(m, fmt.Errorf("%w: %v", ErrTargetGone, err))
		}
	}
	<-c.sent
	c.k.close()
	t.mu.Lock()
	t.alive--
	if t.alive == 0 {
		// No daemon channel left: dm-user fails the I/O it cannot
		// deliver (after its daemon timeout; immediately here).
		t.dead = true
		t.drainLocked()
	}
	t.mu.Unlock()
}

func (t *Target) receive(c *channel, br io.Reader) error {
	var hb [HeaderSize]byte
	for {
		if _, err := io.ReadFull(br, hb[:]); err != nil {
			return err
		}
		var resp Header
		_ = resp.UnmarshalBinary(hb[:])
		c.mu.Lock()
		m := c.inflight[resp.Seq]
		delete(c.inflight, resp.Seq)
		c.mu.Unlock()
		if m == nil {
			// Protocol violation: the kernel marks the channel broken
			// (from_user_error) and fails its messages.
			err := &IOError{Header: resp, Msg: fmt.Sprintf("response seq %d matches no outstanding message", resp.Seq)}
			t.violation(err)
			return err
		}
		err := t.finish(m, resp, br)
		var ioe *IOError
		switch {
		case err == nil || errors.As(err, &ioe) && ioe.Msg == "":
			t.perChan[c.i].Add(1)
			t.complete(m, err)
			<-c.tokens
		case errors.As(err, &ioe):
			t.violation(err)
			t.complete(m, err)
			return err
		default:
			t.complete(m, fmt.Errorf("%w: %v", ErrTargetGone, err))
			return err
		}
	}
}

// finish reads the rest of m's response (read data) and checks it.
func (t *Target) finish(m *message, resp Header, br io.Reader) error {
	status := Status(resp.Type)
	if status != StatusSuccess {
		// ERROR, UNSUPPORTED and unknown values all fail the bio; no data follows.
		return &IOError{Header: m.hdr, Status: status}
	}
	if Type(m.hdr.Type).responseHasData() {
		if _, err := io.ReadFull(br, m.buf); err != nil {
			return err
		}
	}
	if !t.opts.Lenient && (resp.Sector != m.hdr.Sector || resp.Len != m.hdr.Len || resp.Flags != m.hdr.Flags) {
		return &IOError{Header: m.hdr, Msg: fmt.Sprintf("response echoes %v", resp)}
	}
	return nil
}

// Submit sends one request unsplit and waits for its completion. buf is the
// read destination or the write payload; for other types only len(buf) or
// length matters: length is used when buf is nil.
func (t *Target) Submit(typ Type, flags Flags, sector uint64, buf []byte, length uint64) error {
	if buf != nil {
		length = uint64(len(buf))
	}
	m, err := t.start(Header{Type: uint64(typ), Flags: flags, Sector: sector, Len: length}, buf)
	if err != nil {
		return err
	}
	return t.wait(m)
}

func (t *Target) start(h Header, buf []byte) (*message, error) {
	t.sem <- struct{}{}
	m := &message{hdr: h, buf: buf, done: make(chan error, 1)}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dead {
		<-t.sem
		return nil, ErrTargetGone
	}
	m.hdr.Seq = t.seq.Add(1) - 1
	t.queue <- m // cannot block: at most InFlight messages exist
	return m, nil
}

func (t *Target) wait(m *message) error { return <-m.done }

// complete finishes m and returns its in-flight token, so that tokens free
// up even while the submitter is still queueing further pieces.
func (t *Target) complete(m *message, err error) {
	m.done <- err
	<-t.sem
}

func (t *Target) checkRange(op string, off, n int64) error {
	if off < 0 || off%SectorSize != 0 || n%SectorSize != 0 {
		return fmt.Errorf("dmuser emulation: %s at %d length %d: not sector aligned: %w", op, off, n, unix.EINVAL)
	}
	if off+n > t.size {
		return fmt.Errorf("dmuser emulation: %s at %d length %d: beyond device size %d: %w", op, off, n, t.size, unix.EIO)
	}
	return nil
}

// pieces splits [off, off+n) into request lengths.
func (t *Target) pieces(n int64) []int64 {
	var out []int64
	max := int64(t.opts.MaxRequest)
	t.splitMu.Lock()
	defer t.splitMu.Unlock()
	for n > 0 {
		p := min(n, max)
		if t.opts.Split != nil {
			p = (1 + t.opts.Split.Int64N(max/SectorSize)) * SectorSize
			p = min(p, n)
		}
		out = append(out, p)
		n -= p
	}
	return out
}

// do splits an I/O into requests, submits them all (they are in flight
// concurrently, on any channel) and waits for every one.
func (t *Target) do(typ Type, flags Flags, p []byte, off int64, n int64) error {
	var ms []*message
	var firstErr error
	pos := int64(0)
	for _, l := range t.pieces(n) {
		var buf []byte
		if p != nil {
			buf = p[pos : pos+l]
		}
		m, err := t.start(Header{Type: uint64(typ), Flags: flags, Sector: uint64(off+pos) / SectorSize, Len: uint64(l)}, buf)
		if err != nil {
			firstErr = err
			break
		}
		ms = append(ms, m)
		pos += l
	}
	for _, m := range ms {
		if err := t.wait(m); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// ReadAt reads len(p) bytes at byte offset off; both must be sector
// aligned, as for any block device.
func (t *Target) ReadAt(p []byte, off int64) (int, error) {
	if err := t.checkRange("read", off, int64(len(p))); err != nil {
		return 0, err
	}
	if err := t.do(ReqRead, 0, p, off, int64(len(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteAt writes p at byte offset off (sector aligned).
func (t *Target) WriteAt(p []byte, off int64) (int, error) {
	if err := t.checkRange("write", off, int64(len(p))); err != nil {
		return 0, err
	}
	if err := t.do(ReqWrite, 0, p, off, int64(len(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush sends an empty flush request (REQ_PREFLUSH, as blkdev_issue_flush).
func (t *Target) Flush() error {
	return t.Submit(ReqFlush, FlagPreflush|FlagSync, 0, nil, 0)
}

// Discard discards n bytes at off (sector aligned), split like other I/O.
func (t *Target) Discard(off, n int64) error {
	if err := t.checkRange("discard", off, n); err != nil {
		return err
	}
	return t.do(ReqDiscard, 0, nil, off, n)
}
