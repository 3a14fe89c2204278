package dmuser

import (
	"io"
	"os"
	"sync"
	"syscall"
)

// memPipeSize is the initial buffer of one direction of an in-process
// channel: a 4 KiB read's response (header and data) and several queued
// request headers fit. A write that does not fit grows it, up to
// memPipeMax, so that a whole response chunk (MaxChunk bytes after its
// header) moves with one copy in and one copy out instead of trickling
// through a small ring; larger writes stream through it.
const (
	memPipeSize = 64 << 10
	memPipeMax  = 2 * MaxChunk
)

// memPipe is one direction of an in-process channel: a bounded byte ring
// (a socket buffer without the system calls). Writers block while it is
// full, readers while it is empty.
type memPipe struct {
	mu       sync.Mutex
	readable sync.Cond // data arrived or a side closed
	writable sync.Cond // room appeared or a side closed
	buf      []byte
	r, n     int   // read position and bytes buffered
	wclosed  bool  // no more data: reads drain, then see io.EOF
	rerr     error // set when the read side closed: reads return it, writes EPIPE
}

func newMemPipe() *memPipe {
	p := &memPipe{buf: make([]byte, memPipeSize)}
	p.readable.L = &p.mu
	p.writable.L = &p.mu
	return p
}

func (p *memPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	done := 0
	for done < len(b) {
		if p.rerr != nil {
			return done, syscall.EPIPE
		}
		if p.wclosed {
			return done, os.ErrClosed
		}
		if rest := len(b) - done; p.n+rest > len(p.buf) && len(p.buf) < memPipeMax {
			p.grow(min(memPipeMax, max(2*len(p.buf), p.n+rest)))
		}
		if p.n == len(p.buf) {
			p.writable.Wait()
			continue
		}
		w := (p.r + p.n) % len(p.buf)
		end := len(p.buf)
		if w < p.r {
			end = p.r
		}
		k := copy(p.buf[w:end], b[done:])
		p.n += k
		done += k
		p.readable.Broadcast()
	}
	return done, nil
}

// grow reallocates the ring with size bytes, its data from offset 0.
func (p *memPipe) grow(size int) {
	nb := make([]byte, size)
	got := 0
	for got < p.n {
		at := (p.r + got) % len(p.buf)
		got += copy(nb[got:p.n], p.buf[at:min(len(p.buf), at+p.n-got)])
	}
	p.buf, p.r = nb, 0
}

func (p *memPipe) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.n == 0 {
		if p.rerr != nil {
			return 0, p.rerr
		}
		if p.wclosed {
			return 0, io.EOF
		}
		p.readable.Wait()
	}
	if p.rerr != nil {
		return 0, p.rerr
	}
	got := 0
	for got < len(b) && p.n > 0 {
		end := min(p.r+p.n, len(p.buf))
		k := copy(b[got:], p.buf[p.r:end])
		got += k
		p.r = (p.r + k) % len(p.buf)
		p.n -= k
	}
	if p.n == 0 {
		p.r = 0
	}
	p.writable.Broadcast()
	return got, nil
}

// closeWrite ends the stream: buffered bytes can still be read.
func (p *memPipe) closeWrite() {
	p.mu.Lock()
	p.wclosed = true
	p.readable.Broadcast()
	p.writable.Broadcast()
	p.mu.Unlock()
}

// closeRead stops reading: pending and later reads return err, writes
// fail with EPIPE.
func (p *memPipe) closeRead(err error) {
	p.mu.Lock()
	if p.rerr == nil {
		p.rerr = err
	}
	p.readable.Broadcast()
	p.writable.Broadcast()
	p.mu.Unlock()
}

// memEnd is one end of an in-process channel: it reads in and writes out.
type memEnd struct {
	in, out *memPipe
}

// newMemChannel returns the two ends of an in-process channel.
func newMemChannel() (kernel, daemon *memEnd) {
	k2d, d2k := newMemPipe(), newMemPipe()
	return &memEnd{in: d2k, out: k2d}, &memEnd{in: k2d, out: d2k}
}

func (e *memEnd) Read(b []byte) (int, error)  { return e.in.Read(b) }
func (e *memEnd) Write(b []byte) (int, error) { return e.out.Write(b) }

// Close closes this end as closing a socket does: the peer reads end of
// file and its writes fail with EPIPE; this end's reads and writes return
// os.ErrClosed.
func (e *memEnd) Close() error {
	e.in.closeRead(os.ErrClosed)
	e.out.closeWrite()
	return nil
}

// shutdown is shutdown(SHUT_RDWR): the peer reads end of file and its
// writes fail with EPIPE; this end's reads see end of file.
func (e *memEnd) shutdown() {
	e.in.closeRead(io.EOF)
	e.out.closeWrite()
}
