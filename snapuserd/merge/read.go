package merge

import (
	"fmt"
	"io"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
)

// BlockSize is the block size ReadBlock works in (4096).
func (e *Engine) BlockSize() int { return int(e.bs) }

// ReadBlock fills p (one block) with the current bytes of target block b:
// what the snapshot device must return for it, at any moment of the merge
// (before, during, after, and after a crash and a new Engine). It is safe to
// call from many goroutines while Run is active.
func (e *Engine) ReadBlock(b uint64, p []byte) error {
	if int64(len(p)) != e.bs {
		return fmt.Errorf("merge: ReadBlock buffer of %d bytes, want %d", len(p), e.bs)
	}
	if b >= e.baseBlocks {
		return fmt.Errorf("merge: block %d past the end of %s (%d blocks)", b, e.base.Name(), e.baseBlocks)
	}
	i, ok := e.lookup(b)
	if !ok {
		return e.readBase(p, int64(b)*e.bs)
	}
	op := &e.order[i]
	if !op.Type.IsOrdered() {
		return e.readReplace(i, b, p)
	}
	w := e.windowOf(i)
	if w == nil { // merged by an earlier run
		return e.readBase(p, int64(b)*e.bs)
	}
	e.mu.Lock()
	if e.kernel && i < e.kdone {
		// A kernel-driven merge (kernel.go) wrote and flushed it, maybe in a
		// window not committed yet.
		e.mu.Unlock()
		return e.readBase(p, int64(b)*e.bs)
	}
	switch w.state {
	case WindowPending:
		w.refs++
		e.mu.Unlock()
		err := e.readSources(i, 1, p)
		e.mu.Lock()
		w.refs--
		if w.refs == 0 {
			e.cond.Broadcast()
		}
		e.mu.Unlock()
		return err
	case WindowRAReady, WindowInProgress:
		k := int64(i - w.start)
		copy(p, w.buf[k*e.bs:(k+1)*e.bs])
		e.mu.Unlock()
		return nil
	case WindowCompleted:
		e.mu.Unlock()
		return e.readBase(p, int64(b)*e.bs)
	default:
		e.mu.Unlock()
		return fmt.Errorf("merge: block %d (merge-order op %d): window %s: %w", b, i, WindowFailed, ErrFailed)
	}
}

func (e *Engine) readBase(p []byte, off int64) error {
	if err := faultfs.ReadFull(e.base, p, off); err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	return nil
}

// readReplace produces block b of Replace/Zero op i from the COW, caching the
// last decompressed multi-block op for sequential reads.
func (e *Engine) readReplace(i int, b uint64, p []byte) error {
	op := &e.order[i]
	if op.Type == cow.OpZero {
		clear(p)
		return nil
	}
	k := int64(b - op.NewBlock)
	if op.Blocks() == 1 {
		return e.readPayload(i, p, 0)
	}
	e.replMu.Lock()
	defer e.replMu.Unlock()
	if e.replIdx != i {
		n := int64(op.Blocks()) * e.bs
		if int64(cap(e.replData)) < n {
			e.replData = make([]byte, n)
		}
		e.replData = e.replData[:n]
		e.replIdx = -1
		if err := e.readPayload(i, e.replData, 0); err != nil {
			return err
		}
		e.replIdx = i
	}
	copy(p, e.replData[k*e.bs:(k+1)*e.bs])
	return nil
}

// Size is the target (and base device) size in bytes, whole blocks.
func (e *Engine) Size() int64 { return int64(e.baseBlocks) * e.bs }

// ReadAt implements io.ReaderAt over the target image at any offset and
// length (unaligned heads and tails are cut from whole blocks), with the
// guarantees of ReadBlock. The daemon's read path can serve a snapshot from
// it for the whole life of the merge.
func (e *Engine) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("merge: ReadAt at negative offset %d", off)
	}
	size := e.Size()
	n := 0
	var tmp []byte
	for n < len(p) {
		pos := off + int64(n)
		if pos >= size {
			return n, io.EOF
		}
		b, in := uint64(pos/e.bs), pos%e.bs
		if in == 0 && int64(len(p)-n) >= e.bs {
			if err := e.ReadBlock(b, p[n:n+int(e.bs)]); err != nil {
				return n, err
			}
			n += int(e.bs)
			continue
		}
		if tmp == nil {
			tmp = make([]byte, e.bs)
		}
		if err := e.ReadBlock(b, tmp); err != nil {
			return n, err
		}
		n += copy(p[n:], tmp[in:])
	}
	return n, nil
}

// MergeProgress returns the committed and total data ops and whether the
// merge failed (the daemon's MergeReporter).
func (e *Engine) MergeProgress() (merged, total uint64, failed bool) {
	p := e.Progress()
	return p.NumMergeOps, p.TotalOps, p.Phase == PhaseFailed
}

// BlockState tells where ReadBlock currently gets target block b: for the
// destination of an ordered op of this run, its window's index and state;
// ok is false for other blocks (Replace/Zero from the COW, unmapped blocks
// and ops merged before this Engine from the base device).
func (e *Engine) BlockState(b uint64) (window int, state WindowState, ok bool) {
	i, found := e.lookup(b)
	if !found || !e.order[i].Type.IsOrdered() {
		return -1, 0, false
	}
	w := e.windowOf(i)
	if w == nil {
		return -1, 0, false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, x := range e.windows {
		if x == w {
			return k, w.state, true
		}
	}
	return -1, 0, false
}
