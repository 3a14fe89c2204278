package merge

// Kernel-driven merges: Android 12's dm-snapshot compatibility mode
// (snapuserd.md §3, package snapuserd/legacy). There the kernel's
// snapshot-merge target copies the target data into the base device itself
// and reports each step by rewriting a metadata area of the exception store
// the daemon synthesizes. The engine then does what AOSP's legacy daemon
// did around the kernel: it keeps the read-ahead window of ordered ops
// ready (sources read, persisted in the scratch region, served by
// ReadBlock) and commits num_merge_ops — per read-ahead window for ordered
// ops, per notification otherwise (Replace/Zero ops, and every op of a COW
// without scratch region, where AOSP has no read-ahead). Run is not used.

import (
	"errors"
	"fmt"
)

// ReadAheadOps is the number of ordered ops per read-ahead window of a
// kernel-driven merge (510 with the default scratch region), or 0 without
// scratch region (no read-ahead: AOSP's read_ahead_feature_ is false).
func (e *Engine) ReadAheadOps() int {
	if !e.hasScratch {
		return 0
	}
	return e.winCap
}

// StartKernelMerge switches the engine to a kernel-driven merge and prepares
// the first read-ahead window (unless it was recovered from the scratch
// region by New). It writes the scratch region, never the base device.
func (e *Engine) StartKernelMerge() error {
	e.mu.Lock()
	if e.started {
		e.mu.Unlock()
		return errors.New("merge: engine already started")
	}
	e.started, e.kernel, e.kdone = true, true, int(e.merged)
	if e.merged == uint64(len(e.order)) {
		e.phase = PhaseComplete
	} else if int(e.merged) < e.nOrdered {
		e.phase = PhaseOrdered
	} else {
		e.phase = PhaseReplace
	}
	e.mu.Unlock()
	if !e.hasScratch || len(e.windows) == 0 {
		return nil
	}
	return e.prepareKernelWindow(0)
}

// prepareKernelWindow reads window wi's sources and persists them (the
// legacy read-ahead thread's ReadAheadIOStart + ReadAheadIOCompleted).
func (e *Engine) prepareKernelWindow(wi int) error {
	w := e.windows[wi]
	e.mu.Lock()
	e.curWin = wi
	ready := w.state == WindowRAReady
	e.mu.Unlock()
	if ready {
		return nil // recovered from scratch by New
	}
	buf := make([]byte, int64(w.n)*e.bs)
	if err := e.readSources(w.start, w.n, buf); err != nil {
		return e.kernelFail(fmt.Errorf("merge: window %d: %w", wi, err))
	}
	e.mu.Lock()
	w.buf = buf
	w.state = WindowRAReady
	e.mu.Unlock()
	if err := e.persistWindow(w); err != nil {
		return e.kernelFail(fmt.Errorf("merge: window %d: %w", wi, err))
	}
	e.checkpoint(Checkpoint{Kind: WindowPersisted, NumMergeOps: uint64(w.start), Start: uint64(w.start), Ops: w.n})
	return nil
}

func (e *Engine) kernelFail(err error) error {
	e.mu.Lock()
	e.phase, e.err = PhaseFailed, err
	e.mu.Unlock()
	return err
}

// KernelMerged records that the kernel merged the next n ops of the merge
// order into the base device and flushed it (the daemon saw their
// exceptions zeroed in a metadata write). It commits num_merge_ops as AOSP's
// legacy daemon did: at once outside a read-ahead window, else when the
// window's last op is merged, after which the next window is read ahead.
// It reports whether num_merge_ops was committed. An error leaves the
// on-disk state as it was before the call (or at a commit that was made).
func (e *Engine) KernelMerged(n int) (committed bool, err error) {
	e.mu.Lock()
	kernel, kdone, failed := e.kernel, e.kdone, e.phase == PhaseFailed
	e.mu.Unlock()
	switch {
	case !kernel:
		return false, errors.New("merge: KernelMerged without StartKernelMerge")
	case failed:
		return false, fmt.Errorf("merge: kernel merge after an earlier failure: %w", ErrFailed)
	case n < 1:
		return false, fmt.Errorf("merge: kernel merged %d ops", n)
	case kdone+n > len(e.order):
		return false, fmt.Errorf("merge: kernel merged ops %d–%d, past the %d data ops: %w", kdone, kdone+n-1, len(e.order), ErrCorrupt)
	}
	if e.hasScratch && kdone < e.nOrdered {
		wi := e.windowIndex(kdone)
		if wi < 0 {
			return false, fmt.Errorf("merge: merge-order op %d is in no read-ahead window: %w", kdone, ErrCorrupt)
		}
		w := e.windows[wi]
		if end := w.start + w.n; kdone+n > end {
			return false, fmt.Errorf("merge: kernel merged ops %d–%d across the end of read-ahead window %d (ops %d–%d): %w",
				kdone, kdone+n-1, wi, w.start, end-1, ErrCorrupt)
		}
		e.mu.Lock()
		if w.state != WindowRAReady && w.state != WindowInProgress {
			st := w.state
			e.mu.Unlock()
			// AOSP: "not found in read-ahead cache".
			return false, fmt.Errorf("merge: kernel merged ops %d–%d of read-ahead window %d in state %s: %w", kdone, kdone+n-1, wi, st, ErrCorrupt)
		}
		w.state = WindowInProgress
		e.kdone += n
		kdone = e.kdone
		e.mu.Unlock()
		if kdone < w.start+w.n {
			return false, nil // the window commits as a whole
		}
		if err := e.commit(uint64(kdone)); err != nil {
			return false, e.kernelFail(err)
		}
		e.mu.Lock()
		w.state, w.buf = WindowCompleted, nil
		e.curWin = -1
		if kdone >= e.nOrdered {
			e.phase = PhaseReplace
		}
		e.mu.Unlock()
		e.checkpoint(Checkpoint{Kind: WindowCommitted, NumMergeOps: uint64(kdone), Start: uint64(w.start), Ops: w.n})
		if wi+1 < len(e.windows) {
			if err := e.prepareKernelWindow(wi + 1); err != nil {
				return true, err
			}
		}
		e.kernelDoneCheck(kdone)
		return true, nil
	}
	if err := e.commit(uint64(kdone + n)); err != nil {
		return false, e.kernelFail(err)
	}
	e.mu.Lock()
	e.kdone += n
	kdone = e.kdone
	if kdone >= e.nOrdered && e.phase == PhaseOrdered {
		e.phase = PhaseReplace
	}
	e.mu.Unlock()
	e.kernelDoneCheck(kdone)
	return true, nil
}

func (e *Engine) kernelDoneCheck(kdone int) {
	if kdone == len(e.order) {
		e.setPhase(PhaseComplete)
	}
}

// windowIndex returns the index of the window holding merge index i, or -1.
func (e *Engine) windowIndex(i int) int {
	w := e.windowOf(i)
	for k, x := range e.windows {
		if x == w && w != nil {
			return k
		}
	}
	return -1
}
