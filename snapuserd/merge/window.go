package merge

import (
	"context"
	"fmt"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
)

// runLen returns how many ops starting at k (within [k, end)) form one run
// whose values, given by at, step by exactly ±step, and the direction. Runs
// are capped by MergeSize.
func (e *Engine) runLen(k, end int, at func(int) int64, step int64) (int, int64) {
	n, dir := 1, int64(0)
	for k+n < end && (e.opts.MergeSize <= 0 || n < e.opts.MergeSize) {
		d := at(k+n) - at(k+n-1)
		if dir == 0 && (d == step || d == -step) {
			dir = d
		}
		if dir == 0 || d != dir {
			break
		}
		n++
	}
	if dir == 0 {
		dir = step
	}
	return n, dir
}

// readSources fills buf (n blocks) with the target data of ops [start,
// start+n): sources read from the source device in coalesced runs with
// pread, XOR applied. Any goroutine may call it.
func (e *Engine) readSources(start, n int, buf []byte) error {
	return e.readSourcesWith(start, n, buf, nil)
}

// sourceRun is one coalesced read of readSourcesWith: into dst directly, or
// (descending sources) into a separate buffer written into dst reversed.
type sourceRun struct {
	k, n int // first op, ops
	io   uringWrite
	dst  []byte // non-nil: reverse io.buf block by block into dst
}

// readSourcesWith is readSources with the runs read through rr (the
// read-ahead's io_uring, up to uringDepth reads in flight) when rr is not
// nil; only one goroutine may use rr at a time. An io_uring failure is
// returned as errURingRead after the reads were redone with pread.
func (e *Engine) readSourcesWith(start, n int, buf []byte, rr ringWriter) error {
	bs := e.bs
	at := func(i int) int64 { return e.srcOff(&e.order[i]) }
	var runs []sourceRun
	for k := start; k < start+n; {
		run, dir := e.runLen(k, start+n, at, bs)
		lo := at(k)
		dst := buf[int64(k-start)*bs : int64(k-start+run)*bs]
		r := sourceRun{k: k, n: run, io: uringWrite{buf: dst, off: lo}}
		if dir < 0 {
			r.io = uringWrite{buf: make([]byte, len(dst)), off: at(k + run - 1)}
			r.dst = dst
		}
		runs = append(runs, r)
		k += run
	}
	var ringErr error
	if rr != nil {
		ios := make([]uringWrite, 0, uringDepth)
		for i := 0; i < len(runs) && ringErr == nil; i += uringDepth {
			ios = ios[:0]
			for _, r := range runs[i:min(i+uringDepth, len(runs))] {
				ios = append(ios, r.io)
			}
			if testURingFault != nil && testURingFault(true) {
				ringErr = fmt.Errorf("io_uring: injected test failure")
				break
			}
			if ringErr = rr.readBatch(e.backingFD, ios); ringErr == nil {
				e.uringReads.Add(int64(len(ios)))
			}
		}
	}
	if rr == nil || ringErr != nil {
		for _, r := range runs {
			if err := faultfs.ReadFull(e.backing, r.io.buf, r.io.off); err != nil {
				return fmt.Errorf("merge: reading sources of ops %d–%d: %w", r.k, r.k+r.n-1, err)
			}
		}
	}
	for _, r := range runs {
		if r.dst == nil {
			continue
		}
		for j := 0; j < r.n; j++ {
			copy(r.dst[int64(j)*bs:int64(j+1)*bs], r.io.buf[int64(r.n-1-j)*bs:int64(r.n-j)*bs])
		}
	}
	var payload []byte
	for k := start; k < start+n; k++ {
		op := &e.order[k]
		if op.Type != cow.OpXor {
			continue
		}
		if payload == nil {
			payload = make([]byte, bs)
		}
		if err := e.readPayload(k, payload, 0); err != nil {
			return err
		}
		xorBytes(buf[int64(k-start)*bs:int64(k-start+1)*bs], payload)
	}
	if ringErr != nil {
		return &uringReadError{ringErr}
	}
	return nil
}

// uringReadError reports that the read-ahead's io_uring failed; the window's
// data is complete (read again with pread) and the caller drops the ring.
type uringReadError struct{ err error }

func (u *uringReadError) Error() string { return u.err.Error() }

func xorBytes(dst, src []byte) {
	for i := range dst {
		dst[i] ^= src[i]
	}
}

// readPayload decodes op k's payload into p (len(p) bytes at ignore).
func (e *Engine) readPayload(k int, p []byte, ignore int) error {
	op := &e.order[k]
	n, err := e.src.ReadData(op, p, ignore)
	if err == nil && n != len(p) {
		err = fmt.Errorf("short payload: %d of %d bytes", n, len(p))
	}
	if err != nil {
		return fmt.Errorf("merge: %s: merge-order op %d (%s): reading payload: %w", e.cowF.Name(), k, op, err)
	}
	return nil
}

// loadScratchWindow loads the data of the persisted window (read_ahead_state
// 2) whose entries cow.ReadScratch validated (ReconstructDataFromCow).
func (e *Engine) loadScratchWindow(ents []cow.ScratchEntry) (*window, error) {
	start := int(e.merged)
	w := &window{start: start, n: len(ents), state: WindowRAReady, fromScratch: true}
	w.buf = make([]byte, int64(w.n)*e.bs)
	for k, en := range ents {
		if err := faultfs.ReadFull(e.cowF, w.buf[int64(k)*e.bs:int64(k+1)*e.bs], int64(en.FileOffset)); err != nil {
			return nil, fmt.Errorf("merge: reading scratch data of entry %d: %w", k, err)
		}
	}
	e.logf("merge: %s: replaying window of %d ops at op %d from scratch", e.cowF.Name(), w.n, start)
	return w, nil
}

// mergeWindow runs one window through RA_READY, IN_PROGRESS and COMPLETED.
// Its data comes from pf (read ahead while the previous window was merged),
// and as soon as it is in hand the next window's read-ahead starts.
func (e *Engine) mergeWindow(ctx context.Context, wi int, pf *prefetcher) error {
	w := e.windows[wi]
	if err := e.safePoint(ctx); err != nil {
		return err
	}
	e.mu.Lock()
	e.curWin = wi
	recovered := w.state == WindowRAReady
	e.mu.Unlock()
	if !recovered {
		buf, err := pf.take(wi)
		if err != nil {
			return e.windowErr(wi, err)
		}
		pf.start(wi + 1)
		e.mu.Lock()
		w.buf = buf
		w.state = WindowRAReady
		// Readers that started on the sources must finish before any write.
		err = e.waitLocked(ctx, func() bool { return w.refs == 0 })
		e.mu.Unlock()
		if err != nil {
			return err
		}
		if e.hasScratch && e.needsScratch(w) {
			if err := e.persistWindow(w); err != nil {
				return e.windowErr(wi, err)
			}
			e.checkpoint(Checkpoint{Kind: WindowPersisted, NumMergeOps: uint64(w.start), Start: uint64(w.start), Ops: w.n})
		}
	} else {
		pf.start(wi + 1)
	}
	e.mu.Lock()
	w.state = WindowInProgress
	e.mu.Unlock()
	if err := e.writeWindow(ctx, w); err != nil {
		return e.windowErr(wi, err)
	}
	end := uint64(w.start + w.n)
	if err := e.commit(end); err != nil {
		return e.windowErr(wi, err)
	}
	e.mu.Lock()
	w.state = WindowCompleted
	w.buf = nil
	e.curWin = -1
	e.mu.Unlock()
	e.checkpoint(Checkpoint{Kind: WindowCommitted, NumMergeOps: end, Start: uint64(w.start), Ops: w.n})
	return nil
}

// windowRuns splits the window's data into writes of contiguous destination
// blocks (ascending, or descending runs written reversed as one write).
func (e *Engine) windowRuns(w *window) []uringWrite {
	bs := e.bs
	at := func(i int) int64 { return int64(e.order[i].NewBlock) }
	var out []uringWrite
	for k := w.start; k < w.start+w.n; {
		run, dir := e.runLen(k, w.start+w.n, at, 1)
		src := w.buf[int64(k-w.start)*bs : int64(k-w.start+run)*bs]
		lo := at(k)
		if dir < 0 {
			lo = at(k + run - 1)
			t := make([]byte, len(src))
			for j := 0; j < run; j++ {
				copy(t[int64(run-1-j)*bs:int64(run-j)*bs], src[int64(j)*bs:int64(j+1)*bs])
			}
			src = t
		}
		out = append(out, uringWrite{buf: src, off: lo * bs})
		k += run
	}
	return out
}

// writeWindow writes the window's data to base and makes it durable: through
// io_uring when enabled (falling back to synchronous I/O for good on any
// io_uring error), else pwrite + fsync.
func (e *Engine) writeWindow(ctx context.Context, w *window) error {
	runs := e.windowRuns(w)
	if e.ring != nil {
		err := e.writeURing(ctx, runs)
		if err == nil || ctx.Err() != nil {
			return err
		}
		e.logf("merge: %s: io_uring failed, falling back to synchronous I/O: %v", e.cowF.Name(), err)
		e.ring.close()
		e.mu.Lock()
		e.ring, e.uringErr = nil, err
		e.mu.Unlock()
	}
	for _, r := range runs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := faultfs.WriteFull(e.base, r.buf, r.off); err != nil {
			return fmt.Errorf("merging ops at block %d: %w", r.off/e.bs, err)
		}
	}
	if err := syncData(e.base); err != nil {
		return fmt.Errorf("sync %s: %w", e.base.Name(), err)
	}
	return nil
}

// writeURing submits runs in batches of the queue depth, the last batch with
// a drained FSYNC if it has room (else a plain fsync).
func (e *Engine) writeURing(ctx context.Context, runs []uringWrite) error {
	fd := e.baseFD
	for len(runs) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(len(runs), uringDepth)
		last := n == len(runs)
		fsync := last && n < uringDepth
		if testURingFault != nil && testURingFault(false) {
			return fmt.Errorf("io_uring: injected test failure")
		}
		if err := e.ring.writeBatch(fd, runs[:n], fsync); err != nil {
			return err
		}
		e.uringOps.Add(int64(n))
		runs = runs[n:]
		if last && !fsync {
			break
		}
		if last {
			return nil
		}
	}
	if err := syncData(e.base); err != nil {
		return fmt.Errorf("sync %s: %w", e.base.Name(), err)
	}
	return nil
}

// testURingFault, if set by a test, fails an io_uring batch of reads (the
// read-ahead) or writes (the merge thread) when it returns true. It is
// called from both goroutines.
var testURingFault func(read bool) bool

// windowOf returns the window holding merge index i, or nil if i was merged
// before this engine started.
func (e *Engine) windowOf(i int) *window {
	ws := e.windows
	lo, hi := 0, len(ws)
	for lo < hi {
		m := (lo + hi) / 2
		if ws[m].start+ws[m].n <= i {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(ws) && ws[lo].start <= i {
		return ws[lo]
	}
	return nil
}
