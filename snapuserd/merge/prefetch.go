package merge

import (
	"errors"
	"fmt"
	"runtime"
)

// prefetcher is the read-ahead of the ordered phase (AOSP's ReadAhead
// thread): while the merge thread persists and writes window k, one
// goroutine reads the sources of window k+1 and applies its XOR payloads
// into a private buffer, so that the source reads and the COW decoding of a
// window overlap the barriers of the one before it instead of following
// them.
//
// Reading window k+1's sources while window k is being written is safe: the
// merge order never lets an op read a block that an earlier op writes
// (validateOrder), so no write of window k touches them, whether the source
// device is the base device itself or a view of the same blocks. The buffer
// is private until the merge thread takes it: readers keep reading window
// k+1 from the source device (PENDING) until then, and nothing is written
// anywhere, so the on-disk protocol and every crash state are the same as
// without read-ahead.
type prefetcher struct {
	e    *Engine
	wi   int // window being read ahead, -1 = none
	done chan prefetched
}

type prefetched struct {
	buf []byte
	err error
}

func (e *Engine) newPrefetcher() *prefetcher { return &prefetcher{e: e, wi: -1} }

// start reads window wi ahead in the background (unless one is in flight,
// or wi does not exist or was recovered from the scratch region).
func (p *prefetcher) start(wi int) {
	e := p.e
	if p.wi >= 0 || wi >= len(e.windows) || e.windows[wi].fromScratch {
		return
	}
	w := e.windows[wi]
	p.wi, p.done = wi, make(chan prefetched, 1)
	go func() {
		if e.opts.Nice != 0 {
			// Like the merge thread: a dedicated, never unlocked thread.
			runtime.LockOSThread()
			_ = setThreadNice(e.opts.Nice)
		}
		buf := make([]byte, int64(w.n)*e.bs)
		p.done <- prefetched{buf, e.readAhead(w, buf)}
	}()
}

// take returns window wi's target data: the read-ahead result if wi was
// read ahead, else read now.
func (p *prefetcher) take(wi int) ([]byte, error) {
	e := p.e
	w := e.windows[wi]
	if p.wi == wi {
		r := <-p.done
		p.wi = -1
		return r.buf, r.err
	}
	p.wait()
	buf := make([]byte, int64(w.n)*e.bs)
	return buf, e.readAhead(w, buf)
}

// readAhead reads window w's target data into buf, through the read-ahead's
// io_uring if there is one (only the read-ahead goroutine, or the merge
// thread while none is in flight, uses it).
func (e *Engine) readAhead(w *window, buf []byte) error {
	e.mu.Lock()
	rr := e.rring
	e.mu.Unlock()
	err := e.readSourcesWith(w.start, w.n, buf, rr)
	var ue *uringReadError
	if errors.As(err, &ue) {
		e.dropReadRing(ue.err)
		return nil
	}
	return err
}

// wait lets a read-ahead in flight finish (before Run returns and the
// caller may close the files).
func (p *prefetcher) wait() {
	if p.wi >= 0 {
		<-p.done
		p.wi = -1
	}
}

// needsScratch reports whether window w must be persisted in the scratch
// region before its first base write: whether one of its ops writes a block
// that an op of the window reads. Only then can a crash in
// the middle of the window leave a source of the window overwritten, so
// that the window could not be replayed from the source device. Without
// such an op the window is merged like AOSP's merge of a COW without
// scratch, base writes, sync, commit: a crash anywhere leaves
// read_ahead_state 0 or 1 and num_merge_ops at the window's start, from
// which both AOSP's daemon and this engine re-read the window's (intact)
// sources (snapuserd.md §5 recovery rule). The window is then written once
// instead of twice, with two barriers instead of four. The source device
// is assumed to share blocks with the base device at the same numbers
// (<part>-src and <part>-base over the same extents), as for COWs without
// scratch.
//
// Every source of the window is checked against every destination, not only
// the ones at or before it: in a valid merge order no op reads a block an
// earlier op wrote, but the order comes from the COW, which may be hostile,
// and a window that AOSP would replay from its scratch copy must not be
// replayed from sources this window overwrote.
func (e *Engine) needsScratch(w *window) bool {
	srcs := make(map[uint64]struct{}, 2*w.n)
	for k := w.start; k < w.start+w.n; k++ {
		a, b, _ := e.srcBlocks(&e.order[k])
		srcs[a], srcs[b] = struct{}{}, struct{}{}
	}
	for k := w.start; k < w.start+w.n; k++ {
		if _, ok := srcs[e.order[k].NewBlock]; ok {
			return true
		}
	}
	return false
}

func (e *Engine) windowErr(wi int, err error) error {
	return fmt.Errorf("merge: window %d: %w", wi, err)
}
