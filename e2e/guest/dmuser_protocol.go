package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/kernel/dm"
)

// Protocol edge cases of the dm-user module, driven by hand over raw channels (part of the
// dmuser-passthrough scenario): answers on the wrong channel, split headers and payloads,
// ERROR/UNSUPPORTED answers, unknown seq and type, requeue on channel close, non-blocking
// reads and poll, ENOTBLK after removal, and the outstanding-message limit.

type ioResult struct {
	data []byte
	err  error
}

func asyncRead(path string, off int64, n int) <-chan ioResult {
	ch := make(chan ioResult, 1)
	go func() {
		b, err := directRead(path, off, n)
		ch <- ioResult{b, err}
	}()
	return ch
}

func asyncWrite(path string, off int64, data []byte) <-chan ioResult {
	ch := make(chan ioResult, 1)
	go func() { ch <- ioResult{nil, directWrite(path, off, data)} }()
	return ch
}

func awaitIO(ch <-chan ioResult, what string) (ioResult, error) {
	select {
	case r := <-ch:
		return r, nil
	case <-time.After(10 * time.Second):
		return ioResult{}, fmt.Errorf("%s did not complete", what)
	}
}

func readHeader(c *os.File) (msgHeader, error) {
	var h msgHeader
	b := make([]byte, msgHeaderSize)
	if _, err := c.Read(b); err != nil {
		return h, err
	}
	h.decode(b)
	return h, nil
}

func answer(c *os.File, h msgHeader, typ uint64, payload []byte) error {
	b := make([]byte, msgHeaderSize)
	h.Type = typ
	h.encode(b)
	_, err := c.Write(append(b, payload...))
	return err
}

func protocolEdges(ctx context.Context, e *env, c *dm.Control) error {
	const name = "t-proto"
	const size = 1 << 20
	defer cleanup(c, name)
	path, err := c.CreateDevice(name, []dm.Target{dm.User(0, size/512, name)}, nil)
	if err != nil {
		return err
	}
	ctl := "/dev/dm-user/" + name
	a, err := os.OpenFile(ctl, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := os.OpenFile(ctl, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer b.Close()

	// Non-blocking read and poll with nothing queued.
	nb, err := unix.Open(ctl, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: ctl, Err: err}
	}
	defer func() {
		if nb >= 0 {
			unix.Close(nb)
		}
	}()
	if _, err := unix.Read(nb, make([]byte, msgHeaderSize)); err != unix.EAGAIN {
		return fmt.Errorf("non-blocking read of an empty queue: %v, want EAGAIN", err)
	}
	pfd := []unix.PollFd{{Fd: int32(nb), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, 0); err != nil || n != 0 {
		return fmt.Errorf("poll of an empty queue: n=%d %v", n, err)
	}

	// 1. A read request; poll sees it; answered on the wrong channel -> EINVAL; answered on
	//    the right channel in pieces -> the reader gets the data.
	want := pattern('R', 4096)
	r1 := asyncRead(path, 8192, 4096)
	if n, err := unix.Poll(pfd, 5000); err != nil || n != 1 || pfd[0].Revents&unix.POLLIN == 0 {
		return fmt.Errorf("poll with a queued request: n=%d revents=%#x %v", n, pfd[0].Revents, err)
	}
	unix.Close(nb)
	nb = -1
	// Read the header in two pieces (16 + 24 bytes).
	hb := make([]byte, msgHeaderSize)
	if n, err := a.Read(hb[:16]); err != nil || n != 16 {
		return fmt.Errorf("partial header read: %d %v", n, err)
	}
	if n, err := a.Read(hb[16:]); err != nil || n != 24 {
		return fmt.Errorf("rest of header: %d %v", n, err)
	}
	var h msgHeader
	h.decode(hb)
	if h.Type != reqRead || h.Sector != 16 || h.Len != 4096 {
		return fmt.Errorf("read request header %+v, want READ sector 16 len 4096", h)
	}
	if err := answer(b, h, respSuccess, want); !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("answer on the other channel: %v, want EINVAL", err)
	}
	resp := make([]byte, msgHeaderSize)
	h2 := h
	h2.Type = respSuccess
	h2.encode(resp)
	for _, piece := range [][]byte{resp[:10], resp[10:], want[:1000], want[1000:]} {
		if _, err := a.Write(piece); err != nil {
			return fmt.Errorf("split answer: %w", err)
		}
	}
	res, err := awaitIO(r1, "read 1")
	if err != nil {
		return err
	}
	if res.err != nil || !bytes.Equal(res.data, want) {
		return fmt.Errorf("read 1: %v", res.err)
	}

	// 2. ERROR -> EIO, UNSUPPORTED -> EOPNOTSUPP, unknown type -> EINVAL + EIO.
	for _, tc := range []struct {
		typ       uint64
		writeErr  error
		readerErr error
	}{
		{respError, nil, unix.EIO},
		{respUnsupported, nil, unix.EOPNOTSUPP},
		{7, unix.EINVAL, unix.EIO},
	} {
		r := asyncRead(path, 0, 4096)
		h, err := readHeader(b)
		if err != nil {
			return err
		}
		if err := answer(b, h, tc.typ, nil); !errors.Is(err, tc.writeErr) && !(err == nil && tc.writeErr == nil) {
			return fmt.Errorf("answer type %d: %v, want %v", tc.typ, err, tc.writeErr)
		}
		res, err := awaitIO(r, fmt.Sprintf("read answered with type %d", tc.typ))
		if err != nil {
			return err
		}
		if !errors.Is(res.err, tc.readerErr) {
			return fmt.Errorf("read answered with type %d: %v, want %v", tc.typ, res.err, tc.readerErr)
		}
	}

	// 3. Unknown seq -> EINVAL.
	if err := answer(a, msgHeader{Seq: 1 << 40}, respSuccess, nil); !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("answer with an unknown seq: %v, want EINVAL", err)
	}

	// 4. A write request: header, then the payload in two reads; flags and type.
	data := pattern('W', 8192)
	w := asyncWrite(path, 65536, data)
	h, err = readHeader(a)
	if err != nil {
		return err
	}
	if h.Type != reqWrite || h.Sector != 128 || h.Len != 8192 {
		return fmt.Errorf("write request header %+v", h)
	}
	got := make([]byte, 8192)
	if n, err := a.Read(got[:3000]); err != nil || n != 3000 {
		return fmt.Errorf("payload part 1: %d %v", n, err)
	}
	if n, err := a.Read(got[3000:]); err != nil || n != 5192 {
		return fmt.Errorf("payload part 2: %d %v", n, err)
	}
	if !bytes.Equal(got, data) {
		return errors.New("write payload differs")
	}
	if err := answer(a, h, respSuccess, nil); err != nil {
		return err
	}
	if res, err := awaitIO(w, "write"); err != nil || res.err != nil {
		return fmt.Errorf("write: %v %v", err, res.err)
	}

	// 5. Flush: fsync of the device sends a FLUSH with len 0.
	fl := make(chan ioResult, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err == nil {
			err = f.Sync()
			f.Close()
		}
		fl <- ioResult{nil, err}
	}()
	h, err = readHeader(b)
	if err != nil {
		return err
	}
	if h.Type != reqFlush || h.Len != 0 {
		return fmt.Errorf("flush request %+v", h)
	}
	if err := answer(b, h, respSuccess, nil); err != nil {
		return err
	}
	if res, err := awaitIO(fl, "fsync"); err != nil || res.err != nil {
		return fmt.Errorf("fsync: %v %v", err, res.err)
	}

	// 6. A message read on a channel that then closes goes back to the queue.
	r6 := asyncRead(path, 4096*5, 4096)
	h, err = readHeader(a)
	if err != nil {
		return err
	}
	a.Close()
	h6, err := readHeader(b)
	if err != nil {
		return err
	}
	if h6.Seq != h.Seq || h6.Sector != h.Sector {
		return fmt.Errorf("requeued message %+v, want the one read on the closed channel %+v", h6, h)
	}
	if err := answer(b, h6, respSuccess, want); err != nil {
		return err
	}
	if res, err := awaitIO(r6, "requeued read"); err != nil || res.err != nil || !bytes.Equal(res.data, want) {
		return fmt.Errorf("requeued read: %v %v", err, res.err)
	}

	// 7. After removal the open channel fails with ENOTBLK.
	if err := c.Remove(name, false); err != nil {
		return err
	}
	if _, err := b.Read(make([]byte, msgHeaderSize)); !errors.Is(err, unix.ENOTBLK) {
		return fmt.Errorf("read after remove: %v, want ENOTBLK", err)
	}
	if err := answer(b, msgHeader{Seq: 1}, respSuccess, nil); !errors.Is(err, unix.ENOTBLK) {
		return fmt.Errorf("write after remove: %v, want ENOTBLK", err)
	}
	return nil
}

const maxOutstandingParam = "/sys/module/dm_user/parameters/dm_user_max_outstanding"

// outstandingLimit lowers the limit to 4, issues 12 reads with a daemon that does not read
// yet, checks the kernel never has more than 4 messages outstanding, then serves them all.
func outstandingLimit(ctx context.Context, e *env, c *dm.Control) error {
	const name = "t-limit"
	const limit, n = 4, 12
	old, err := os.ReadFile(maxOutstandingParam)
	if err != nil {
		return err
	}
	if err := os.WriteFile(maxOutstandingParam, []byte(fmt.Sprint(limit)), 0); err != nil {
		return err
	}
	defer os.WriteFile(maxOutstandingParam, bytes.TrimSpace(old), 0)
	defer cleanup(c, name)
	path, err := c.CreateDevice(name, []dm.Target{dm.User(0, 2048, name)}, nil)
	if err != nil {
		return err
	}
	ch, err := os.OpenFile("/dev/dm-user/"+name, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer ch.Close()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = directRead(path, int64(i)*4096, 4096)
		}()
	}
	if err := waitFor(ctx, "outstanding to reach the limit", 10*time.Millisecond, func() (bool, error) {
		s, err := userStatus(c, name)
		return err == nil && s.Outstanding == limit, err
	}); err != nil {
		return err
	}
	for i := 0; i < 20; i++ {
		s, err := userStatus(c, name)
		if err != nil {
			return err
		}
		if s.Outstanding > limit {
			return fmt.Errorf("%d messages outstanding, limit %d", s.Outstanding, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	zero := make([]byte, 4096)
	for i := 0; i < n; i++ {
		h, err := readHeader(ch)
		if err != nil {
			return err
		}
		if err := answer(ch, h, respSuccess, zero); err != nil {
			return err
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		return errors.New("readers did not finish after every message was answered")
	}
	return errors.Join(errs...)
}
