package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/kernel/dm"
)

// dmuser-bad-reply: a daemon that answers wrongly must cost exactly the requests it got
// wrong (EIO), never another request's data, never a hang. Driven by hand over raw channels
// of our module (kernel/dm-user/dm-user.c, "Answer framing"):
//
//   - bad-answers: wrong seq, wrong len, wrong sector, wrong flags, a short payload followed
//     by the next answer, a short payload with the next answer's header in the same write,
//     a WRITE answered with the wrong len → EIO for exactly those; the others (incl. one
//     answered with writev in three pieces) get their data;
//   - short-then-read: a short payload ends when the channel reads again;
//   - readv-framing: readv with room for two messages returns one; the payload of a WRITE
//     request comes with its header in one readv;
//   - uring-framing: the same for io_uring READV and READ, answers by io_uring WRITEV and
//     WRITE (uring.go);
//   - never-answers: a daemon that keeps its fd open but never reads, stops reading half way
//     through a message, or never answers → EIO after dm_user_request_timeout_msec; a late
//     answer gets EINVAL; the channel's read stream stays framed (zero padding);
//   - suspend-full-queue: the outstanding limit reached with a silent daemon, then suspend:
//     map() does not sleep, suspend returns once the requests time out;
//   - suspend-interruptible: the same with no request timeout: the suspend waits for the
//     six reads, and a SIGKILL ends it at once (it waits interruptibly for I/O, not in
//     dm's SRCU grace period behind a map() asleep); the daemon then serves them all;
//   - misc-name-per-device: another mapped device cannot take a misc name in use;
//   - max-io-rounding: dm_user_max_io_sectors=1001 (module reloaded) still hands the daemon
//     whole 4 KiB blocks (rounded down to 1000 sectors).
func init() {
	register(scenario{name: "dmuser-bad-reply", run: dmuserBadReply, limit: 90 * time.Second})
}

const (
	requestTimeoutParam = "/sys/module/dm_user/parameters/dm_user_request_timeout_msec"
	flagFUA             = 0x200
)

// setParam writes a module parameter and returns a function restoring the old value.
func setParam(path, value string) (func(), error) {
	old, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(value), 0); err != nil {
		return nil, err
	}
	return func() { os.WriteFile(path, bytes.TrimSpace(old), 0) }, nil
}

// blockData is the content the bad-reply daemon serves for 4 KiB block i.
func blockData(i int) []byte {
	b := make([]byte, 4096)
	for j := range b {
		b[j] = byte(i*31 + j/512 + 1)
	}
	return b
}

func readvFile(f *os.File, iovs [][]byte) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, rerr = unix.Readv(int(fd), iovs)
		return rerr != unix.EAGAIN
	}); err != nil {
		return 0, err
	}
	return n, rerr
}

func writevFile(f *os.File, iovs [][]byte) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var werr error
	if err := rc.Write(func(fd uintptr) bool {
		n, werr = unix.Writev(int(fd), iovs)
		return werr != unix.EAGAIN
	}); err != nil {
		return 0, err
	}
	return n, werr
}

func encodeHeader(h msgHeader) []byte {
	b := make([]byte, msgHeaderSize)
	h.encode(b)
	return b
}

func successHeader(h msgHeader) []byte {
	h.Type = respSuccess
	return encodeHeader(h)
}

// writeRaw writes b in one write() and returns the error.
func writeRaw(c *os.File, b []byte) error {
	n, err := c.Write(b)
	if err == nil && n != len(b) {
		return fmt.Errorf("short write %d of %d", n, len(b))
	}
	return err
}

func wantEINVAL(what string, err error) error {
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("%s: write returned %v, want EINVAL", what, err)
	}
	return nil
}

// brDevice creates a dm-user device of size bytes named name and opens one channel.
func brDevice(c *dm.Control, name string, size int) (string, *os.File, error) {
	path, err := c.CreateDevice(name, []dm.Target{dm.User(0, uint64(size/512), name)}, nil)
	if err != nil {
		return "", nil, err
	}
	ch, err := os.OpenFile("/dev/dm-user/"+name, os.O_RDWR, 0)
	if err != nil {
		return "", nil, err
	}
	return path, ch, nil
}

func waitOutstanding(ctx context.Context, c *dm.Control, name string, n uint32) error {
	return waitFor(ctx, fmt.Sprintf("%d outstanding on %s", n, name), 10*time.Millisecond, func() (bool, error) {
		s, err := userStatus(c, name)
		return err == nil && s.Outstanding == n, err
	})
}

func dmuserBadReply(ctx context.Context, e *env) error {
	c, err := dm.Open()
	if err != nil {
		return err
	}
	defer c.Close()
	restore, err := setParam(requestTimeoutParam, "3000")
	if err != nil {
		return fmt.Errorf("module parameter: %w", err)
	}
	defer func() { restore() }()
	steps := []struct {
		name string
		fn   func(context.Context, *env, *dm.Control) error
	}{
		{"bad-answers", brBadAnswers},
		{"short-then-read", brShortThenRead},
		{"readv-framing", brReadvFraming},
		{"uring-framing", brURingFraming},
		{"never-answers", brNeverAnswers},
		{"suspend-full-queue", brSuspendFullQueue},
		{"suspend-interruptible", brSuspendInterruptible},
		{"misc-name-per-device", brMiscNamePerDevice},
		{"max-io-rounding", brMaxIORounding},
	}
	for _, s := range steps {
		t0 := time.Now()
		if err := s.fn(ctx, e, c); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		e.logf("%s ok (%.2fs)", s.name, time.Since(t0).Seconds())
	}
	return nil
}

// brBadAnswers: ten reads in flight at once on one channel, answered per block as planned;
// then a WRITE answered with the wrong len.
func brBadAnswers(ctx context.Context, e *env, c *dm.Control) error {
	const name = "t-bad"
	defer cleanup(c, name)
	path, ch, err := brDevice(c, name, 1<<20)
	if err != nil {
		return err
	}
	defer ch.Close()

	const n = 10
	// Blocks whose answer is wrong and must fail with EIO; the others must read correctly.
	bad := map[int]string{1: "wrong seq", 2: "wrong len", 3: "wrong sector", 4: "wrong flags",
		5: "short payload, next answer in a new write", 7: "short payload, next header in the same write"}
	res := make([]<-chan ioResult, n)
	for i := range n {
		res[i] = asyncRead(path, int64(i)*4096, 4096)
	}
	hdr := map[int]msgHeader{}
	for len(hdr) < n {
		h, err := readHeader(ch)
		if err != nil {
			return err
		}
		if h.Type != reqRead || h.Len != 4096 || h.Sector%8 != 0 || h.Sector/8 >= n {
			return fmt.Errorf("unexpected request %+v", h)
		}
		hdr[int(h.Sector/8)] = h
	}
	ok := func(i int) []byte { return append(successHeader(hdr[i]), blockData(i)...) }

	if err := writeRaw(ch, ok(0)); err != nil {
		return fmt.Errorf("block 0: %w", err)
	}
	h := hdr[1]
	h.Seq += 1 << 32
	if err := wantEINVAL("wrong seq", writeRaw(ch, append(successHeader(h), blockData(1)...))); err != nil {
		return err
	}
	h = hdr[2]
	h.Len = 8192
	if err := wantEINVAL("wrong len", writeRaw(ch, append(successHeader(h), append(blockData(2), blockData(2)...)...))); err != nil {
		return err
	}
	h = hdr[3]
	h.Sector += 8
	if err := wantEINVAL("wrong sector", writeRaw(ch, append(successHeader(h), blockData(3)...))); err != nil {
		return err
	}
	h = hdr[4]
	h.Flags ^= flagFUA
	if err := wantEINVAL("wrong flags", writeRaw(ch, append(successHeader(h), blockData(4)...))); err != nil {
		return err
	}
	// 5: 1000 of 4096 payload bytes, then block 6's whole answer in a new write.
	if err := writeRaw(ch, append(successHeader(hdr[5]), blockData(5)[:1000]...)); err != nil {
		return fmt.Errorf("short answer 5: %w", err)
	}
	if err := writeRaw(ch, ok(6)); err != nil {
		return fmt.Errorf("answer 6 after a short one: %w", err)
	}
	// 7: 2000 payload bytes, then block 8's header and payload, all in one write: 7 must
	// fail rather than take 8's header as payload.
	mixed := append(append(successHeader(hdr[7]), blockData(7)[:2000]...), ok(8)...)
	if err := wantEINVAL("short payload + next header in one write", writeRaw(ch, mixed)); err != nil {
		return err
	}
	if err := writeRaw(ch, ok(8)); err != nil {
		return fmt.Errorf("answer 8: %w", err)
	}
	// 9: writev in three pieces.
	d9 := blockData(9)
	if n, err := writevFile(ch, [][]byte{successHeader(hdr[9]), d9[:1000], d9[1000:]}); err != nil || n != msgHeaderSize+4096 {
		return fmt.Errorf("writev answer 9: %d %v", n, err)
	}
	t0 := time.Now()
	for i := range n {
		r, err := awaitIO(res[i], fmt.Sprintf("read of block %d", i))
		if err != nil {
			return err
		}
		if why, isBad := bad[i]; isBad {
			if !errors.Is(r.err, unix.EIO) {
				return fmt.Errorf("block %d (%s): read %v, want EIO", i, why, r.err)
			}
			continue
		}
		if r.err != nil || !bytes.Equal(r.data, blockData(i)) {
			return fmt.Errorf("block %d (answered correctly): err %v, data ok %v", i, r.err, r.err == nil && bytes.Equal(r.data, blockData(i)))
		}
	}
	e.logf("bad answers: EIO for blocks 1-5,7 (block 1, never answered, after %.1fs), data for 0,6,8,9", time.Since(t0).Seconds())

	// A WRITE answered with the wrong len fails; the next WRITE answered right succeeds.
	for _, tc := range []struct {
		lenDelta uint64
		want     error
	}{{4096, unix.EIO}, {0, nil}} {
		w := asyncWrite(path, 12*4096, blockData(12))
		h, err := readHeader(ch)
		if err != nil {
			return err
		}
		if h.Type != reqWrite || h.Len != 4096 {
			return fmt.Errorf("write request %+v", h)
		}
		payload := make([]byte, 4096)
		if n, err := ch.Read(payload); err != nil || n != 4096 || !bytes.Equal(payload, blockData(12)) {
			return fmt.Errorf("write payload: %d %v", n, err)
		}
		h.Len += tc.lenDelta
		werr := writeRaw(ch, successHeader(h))
		if tc.want != nil {
			if err := wantEINVAL("write answered with the wrong len", werr); err != nil {
				return err
			}
		} else if werr != nil {
			return werr
		}
		r, err := awaitIO(w, "write")
		if err != nil {
			return err
		}
		if (tc.want == nil && r.err != nil) || (tc.want != nil && !errors.Is(r.err, tc.want)) {
			return fmt.Errorf("write answered with len+%d: %v, want %v", tc.lenDelta, r.err, tc.want)
		}
	}
	s, err := userStatus(c, name)
	if err != nil || s.Outstanding != 0 {
		return fmt.Errorf("status after the bad answers %+v %v, want 0 outstanding", s, err)
	}
	return nil
}

// brShortThenRead: a short payload is over as soon as the channel reads the next request.
func brShortThenRead(ctx context.Context, e *env, c *dm.Control) error {
	const name = "t-bad2"
	defer cleanup(c, name)
	path, ch, err := brDevice(c, name, 1<<20)
	if err != nil {
		return err
	}
	defer ch.Close()
	ra, rb := asyncRead(path, 20*4096, 4096), asyncRead(path, 21*4096, 4096)
	x, err := readHeader(ch)
	if err != nil {
		return err
	}
	if err := writeRaw(ch, append(successHeader(x), blockData(int(x.Sector / 8))[:100]...)); err != nil {
		return err
	}
	t0 := time.Now()
	y, err := readHeader(ch)
	if err != nil {
		return err
	}
	rx, ry := ra, rb
	if x.Sector/8 == 21 {
		rx, ry = rb, ra
	}
	r, err := awaitIO(rx, "read with a short answer")
	if err != nil {
		return err
	}
	if !errors.Is(r.err, unix.EIO) {
		return fmt.Errorf("short answer followed by a read: %v, want EIO", r.err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		return fmt.Errorf("short answer failed after %s: the request timeout, not the next read, ended it", d)
	}
	if err := writeRaw(ch, append(successHeader(y), blockData(int(y.Sector/8))...)); err != nil {
		return err
	}
	r, err = awaitIO(ry, "read answered after the short one")
	if err != nil {
		return err
	}
	if r.err != nil || !bytes.Equal(r.data, blockData(int(y.Sector/8))) {
		return fmt.Errorf("read answered after the short one: %v", r.err)
	}
	return nil
}

// brReadvFraming: readv and writev keep message boundaries.
func brReadvFraming(ctx context.Context, e *env, c *dm.Control) error {
	const name = "t-bad3"
	defer cleanup(c, name)
	path, ch, err := brDevice(c, name, 1<<20)
	if err != nil {
		return err
	}
	defer ch.Close()
	r30, r31 := asyncRead(path, 30*4096, 4096), asyncRead(path, 31*4096, 4096)
	if err := waitOutstanding(ctx, c, name, 2); err != nil {
		return err
	}
	for i := 0; i < 2; i++ {
		hb, rest := make([]byte, msgHeaderSize), make([]byte, 4096)
		n, err := readvFile(ch, [][]byte{hb, rest})
		if err != nil {
			return err
		}
		if n != msgHeaderSize {
			return fmt.Errorf("readv([40][4096]) with two READ requests queued returned %d bytes, want 40 (one message)", n)
		}
		var h msgHeader
		h.decode(hb)
		if h.Type != reqRead || (h.Sector != 30*8 && h.Sector != 31*8) {
			return fmt.Errorf("readv header %+v", h)
		}
		d := blockData(int(h.Sector / 8))
		if n, err := writevFile(ch, [][]byte{successHeader(h), d}); err != nil || n != msgHeaderSize+4096 {
			return fmt.Errorf("writev answer: %d %v", n, err)
		}
	}
	for i, r := range []<-chan ioResult{r30, r31} {
		res, err := awaitIO(r, "readv-served read")
		if err != nil {
			return err
		}
		if res.err != nil || !bytes.Equal(res.data, blockData(30+i)) {
			return fmt.Errorf("block %d served over readv/writev: %v", 30+i, res.err)
		}
	}
	// A WRITE request: header split over two iovecs, payload in the third, one readv.
	data := append(blockData(32), blockData(33)...)
	w := asyncWrite(path, 32*4096, data)
	a, b, p := make([]byte, 20), make([]byte, 20), make([]byte, 8192+100)
	n, err := readvFile(ch, [][]byte{a, b, p})
	if err != nil {
		return err
	}
	if n != msgHeaderSize+8192 {
		return fmt.Errorf("readv of a WRITE request returned %d bytes, want %d", n, msgHeaderSize+8192)
	}
	var h msgHeader
	h.decode(append(a, b...))
	if h.Type != reqWrite || h.Sector != 32*8 || h.Len != 8192 || !bytes.Equal(p[:8192], data) {
		return fmt.Errorf("readv WRITE request %+v (payload ok %v)", h, bytes.Equal(p[:8192], data))
	}
	if err := writeRaw(ch, successHeader(h)); err != nil {
		return err
	}
	if res, err := awaitIO(w, "write"); err != nil || res.err != nil {
		return fmt.Errorf("write: %v %v", err, res.err)
	}
	return nil
}

// brNeverAnswers: requests a daemon sits on fail after the request timeout.
func brNeverAnswers(ctx context.Context, e *env, c *dm.Control) error {
	const name = "t-bad4"
	const timeout = time.Second
	restore, err := setParam(requestTimeoutParam, fmt.Sprint(timeout.Milliseconds()))
	if err != nil {
		return err
	}
	defer restore()
	defer cleanup(c, name)
	path, ch, err := brDevice(c, name, 1<<20)
	if err != nil {
		return err
	}
	defer ch.Close()
	expectEIO := func(what string, r <-chan ioResult, t0 time.Time) error {
		res, err := awaitIO(r, what)
		if err != nil {
			return err
		}
		d := time.Since(t0)
		if !errors.Is(res.err, unix.EIO) {
			return fmt.Errorf("%s: %v, want EIO", what, res.err)
		}
		if d < timeout*9/10 {
			return fmt.Errorf("%s failed after %s, before the %s request timeout", what, d, timeout)
		}
		e.logf("%s: EIO after %.2fs", what, d.Seconds())
		return nil
	}

	// 1. Queued, nobody reads (the channel is open).
	t0 := time.Now()
	if err := expectEIO("queued, never read", asyncRead(path, 40*4096, 4096), t0); err != nil {
		return err
	}
	// 2. Read, never answered; the late answer is refused.
	t0 = time.Now()
	r := asyncRead(path, 41*4096, 4096)
	h, err := readHeader(ch)
	if err != nil {
		return err
	}
	if err := expectEIO("read, never answered", r, t0); err != nil {
		return err
	}
	if err := wantEINVAL("late answer", writeRaw(ch, append(successHeader(h), blockData(41)...))); err != nil {
		return err
	}
	// 3. A WRITE request read half way: EIO; the channel's next read returns the rest of
	//    that message as zeros, then the stream continues with whole messages.
	t0 = time.Now()
	w := asyncWrite(path, 42*4096, blockData(42))
	h, err = readHeader(ch)
	if err != nil {
		return err
	}
	if h.Type != reqWrite || h.Len != 4096 {
		return fmt.Errorf("write request %+v", h)
	}
	part := make([]byte, 1000)
	if n, err := ch.Read(part); err != nil || n != 1000 {
		return fmt.Errorf("first 1000 payload bytes: %d %v", n, err)
	}
	if err := expectEIO("write read half way", w, t0); err != nil {
		return err
	}
	pad := make([]byte, 8192)
	n, err := ch.Read(pad)
	if err != nil || n != 4096-1000 || !bytes.Equal(pad[:n], make([]byte, n)) {
		return fmt.Errorf("read after a message timed out half way: %d bytes (zero %v), %v; want %d zero bytes",
			n, err == nil && bytes.Equal(pad[:n], make([]byte, n)), err, 4096-1000)
	}
	// 4. An answer whose payload stalls: EIO; the late rest of the payload is dropped.
	t0 = time.Now()
	r = asyncRead(path, 44*4096, 4096)
	h, err = readHeader(ch)
	if err != nil {
		return err
	}
	d := blockData(44)
	if err := writeRaw(ch, append(successHeader(h), d[:1000]...)); err != nil {
		return err
	}
	if err := expectEIO("answer payload stalled", r, t0); err != nil {
		return err
	}
	if err := writeRaw(ch, d[1000:]); err != nil {
		return fmt.Errorf("late rest of a timed-out answer: %w", err)
	}
	// 5. The channel still works.
	r = asyncRead(path, 45*4096, 4096)
	h, err = readHeader(ch)
	if err != nil {
		return err
	}
	if err := writeRaw(ch, append(successHeader(h), blockData(45)...)); err != nil {
		return err
	}
	if res, err := awaitIO(r, "read after the timeouts"); err != nil || res.err != nil || !bytes.Equal(res.data, blockData(45)) {
		return fmt.Errorf("read after the timeouts: %v %v", err, res.err)
	}
	return nil
}

// brSuspendFullQueue: with the outstanding limit reached and a daemon that never answers,
// more I/O waits in the kernel (not in map() under dm's SRCU), and a suspend returns once
// the request timeout has failed everything.
func brSuspendFullQueue(ctx context.Context, e *env, c *dm.Control) error {
	const name = "t-bad5"
	restoreT, err := setParam(requestTimeoutParam, "1000")
	if err != nil {
		return err
	}
	defer restoreT()
	restoreL, err := setParam(maxOutstandingParam, "2")
	if err != nil {
		return err
	}
	defer restoreL()
	defer cleanup(c, name)
	path, ch, err := brDevice(c, name, 1<<20)
	if err != nil {
		return err
	}
	defer ch.Close()
	var rs []<-chan ioResult
	for i := range 6 {
		rs = append(rs, asyncRead(path, int64(50+i)*4096, 4096))
	}
	if err := waitOutstanding(ctx, c, name, 2); err != nil {
		return err
	}
	// All six must be inside the target (2 visible to the daemon, 4 on the backlog), not
	// still on their way to dm: bios arriving after the suspend wait for the resume.
	if err := waitInflight(ctx, path, 6); err != nil {
		return err
	}
	t0 := time.Now()
	susp := make(chan error, 1)
	go func() { susp <- c.Suspend(name, false) }()
	select {
	case err := <-susp:
		if err != nil {
			return fmt.Errorf("suspend: %w", err)
		}
	case <-time.After(20 * time.Second):
		return errors.New("suspend still blocked after 20 s")
	}
	e.logf("suspend with a full queue returned after %.2fs", time.Since(t0).Seconds())
	for i, r := range rs {
		res, err := awaitIO(r, fmt.Sprintf("reader %d", i))
		if err != nil {
			return err
		}
		if !errors.Is(res.err, unix.EIO) {
			return fmt.Errorf("reader %d: %v, want EIO", i, res.err)
		}
	}
	if _, err := c.Resume(name); err != nil {
		return err
	}
	return nil
}

// waitInflight waits (at most 5 s) until dm counts n reads in flight on the device: dm
// starts accounting a bio when the target's map() has returned.
func waitInflight(ctx context.Context, path string, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	inflight := "/sys/dev/block/" + devName(path) + "/inflight"
	return waitFor(ctx, fmt.Sprintf("%d reads in flight (%s; map() must not hold them)", n, inflight), 10*time.Millisecond, func() (bool, error) {
		b, err := os.ReadFile(inflight)
		f := strings.Fields(string(b))
		return err == nil && len(f) == 2 && f[0] == fmt.Sprint(n), err
	})
}

func dmSuspendMain(name string) int {
	c, err := dm.Open()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dm-suspend:", err)
		return 1
	}
	defer c.Close()
	if err := c.Suspend(name, false); err != nil {
		fmt.Fprintln(os.Stderr, "dm-suspend:", err)
		return 1
	}
	return 0
}

// brSuspendInterruptible: no request timeout, the outstanding limit (2) reached, a silent
// daemon, six reads inside the target; a suspend in a child process must be waiting for
// them and die at once on SIGKILL; then the daemon serves all six.
func brSuspendInterruptible(ctx context.Context, e *env, c *dm.Control) error {
	const name = "t-bad8"
	restoreT, err := setParam(requestTimeoutParam, "0")
	if err != nil {
		return err
	}
	defer restoreT()
	restoreL, err := setParam(maxOutstandingParam, "2")
	if err != nil {
		return err
	}
	defer restoreL()
	defer cleanup(c, name)
	path, ch, err := brDevice(c, name, 1<<20)
	if err != nil {
		return err
	}
	defer ch.Close()
	rs := map[uint64]<-chan ioResult{}
	for i := range 6 {
		rs[uint64(70+i)*8] = asyncRead(path, int64(70+i)*4096, 4096)
	}
	if err := waitOutstanding(ctx, c, name, 2); err != nil {
		return err
	}
	if err := waitInflight(ctx, path, 6); err != nil {
		return err
	}
	p, err := startProcess(e, "dm-suspend", "/proc/self/exe", "dm-suspend", name)
	if err != nil {
		return err
	}
	select {
	case <-p.done:
		return fmt.Errorf("suspend returned with six reads unanswered: %v %q", p.err, p.output())
	case <-time.After(500 * time.Millisecond):
	}
	t0 := time.Now()
	p.cmd.Process.Signal(unix.SIGKILL)
	select {
	case <-p.done:
		e.logf("suspend waiting for a silent daemon died %.3fs after SIGKILL", time.Since(t0).Seconds())
	case <-time.After(3 * time.Second):
		// Unblock it (serve below) before failing.
		err = errors.New("suspend still alive 3 s after SIGKILL: it cannot be interrupted")
	}
	for range 6 {
		h, herr := readHeader(ch)
		if herr != nil {
			return herr
		}
		if werr := writeRaw(ch, append(successHeader(h), blockData(int(h.Sector/8))...)); werr != nil {
			return werr
		}
	}
	<-p.done
	if err != nil {
		return err
	}
	for sector, r := range rs {
		res, err := awaitIO(r, "read after the suspend was killed")
		if err != nil {
			return err
		}
		if res.err != nil || !bytes.Equal(res.data, blockData(int(sector/8))) {
			return fmt.Errorf("block %d after the suspend was killed: %v", sector/8, res.err)
		}
	}
	info, err := c.Info(name)
	if err != nil {
		return err
	}
	if info.Suspended() {
		return errors.New("device left suspended by the killed suspend")
	}
	return nil
}

// brMiscNamePerDevice: a misc name belongs to one mapped device.
func brMiscNamePerDevice(ctx context.Context, e *env, c *dm.Control) error {
	const owner, thief = "t-own", "t-thief"
	defer cleanup(c, thief, owner)
	if _, err := c.CreateDevice(owner, []dm.Target{dm.User(0, 2048, owner)}, nil); err != nil {
		return err
	}
	if _, err := c.CreateDevice(thief, []dm.Target{dm.User(0, 2048, owner)}, nil); err == nil {
		return fmt.Errorf("a second device took the misc name %q", owner)
	} else {
		e.logf("second device with the same misc name refused: %v", err)
	}
	if _, err := c.Info(thief); !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("refused device still exists: %v", err)
	}
	// The owner may still reload with the name (the daemon's channels survive).
	ch, err := os.OpenFile("/dev/dm-user/"+owner, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := c.Reload(owner, []dm.Target{dm.User(0, 2048, owner)}); err != nil {
		return fmt.Errorf("reload of the owner: %w", err)
	}
	s, err := userStatus(c, owner)
	if err != nil || s.Channels != 1 {
		return fmt.Errorf("owner after reload %+v %v, want its 1 channel", s, err)
	}
	return nil
}

// brMaxIORounding reloads the module with dm_user_max_io_sectors=1001 and checks a 1 MiB
// read reaches the daemon as whole 4 KiB blocks of at most 1000 sectors; the module is
// loaded again with its defaults afterwards.
func brMaxIORounding(ctx context.Context, e *env, c *dm.Control) (err error) {
	const name = "t-bad6"
	ko := "/lib/modules/" + strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")) + "/extra/dm-user.ko"
	if _, err := busybox(ctx, "rmmod", "dm_user"); err != nil {
		return err
	}
	defer func() {
		busybox(context.Background(), "rmmod", "dm_user")
		if _, ierr := busybox(context.Background(), "insmod", ko); ierr != nil && err == nil {
			err = ierr
		}
	}()
	if _, err := busybox(ctx, "insmod", ko, "dm_user_max_io_sectors=1001"); err != nil {
		return err
	}
	path, ch, err := brDevice(c, name, 1<<20)
	if err != nil {
		return err
	}
	defer func() {
		ch.Close()
		cleanup(c, name)
	}()
	r := asyncRead(path, 0, 1<<20)
	var lens []uint64
	for total := uint64(0); total < 1<<20; {
		h, err := readHeader(ch)
		if err != nil {
			return err
		}
		lens = append(lens, h.Len)
		if h.Type != reqRead || h.Len%4096 != 0 || h.Sector%8 != 0 || h.Len > 1000*512 {
			return fmt.Errorf("request %+v with dm_user_max_io_sectors=1001: want whole 4 KiB blocks, at most 1000 sectors", h)
		}
		if err := writeRaw(ch, append(successHeader(h), make([]byte, h.Len)...)); err != nil {
			return err
		}
		total += h.Len
	}
	res, err := awaitIO(r, "1 MiB read")
	if err != nil {
		return err
	}
	if res.err != nil {
		return res.err
	}
	e.logf("1 MiB read with dm_user_max_io_sectors=1001 arrived as requests of %v bytes", lens)
	return nil
}
