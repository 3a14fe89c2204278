package merge

import (
	"context"
	"fmt"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
)

// mergeReplace merges the Replace/Zero ops after the ordered ones: runs of
// contiguous destinations of at most ReplaceRunBlocks blocks, one write each
// (whose writeback starts at once); syncData + commit after at least
// ReplaceCommitBlocks blocks and at the end.
func (e *Engine) mergeReplace(ctx context.Context) error {
	e.mu.Lock()
	i := int(e.merged)
	e.mu.Unlock()
	if i < e.nOrdered {
		return fmt.Errorf("merge: replace phase started at op %d before the %d ordered ops were merged: %w", i, e.nOrdered, ErrCorrupt)
	}
	bs := e.bs
	buf := make([]byte, ReplaceRunBlocks*bs)
	commitBlocks := uint64(ReplaceCommitBlocks)
	if n := e.opts.replaceCommitBlocks; n > 0 {
		commitBlocks = uint64(n)
	}
	committed, pending, pendingBlocks := i, 0, uint64(0)
	flush := func() error {
		if pending == 0 {
			return nil
		}
		if err := syncData(e.base); err != nil {
			return fmt.Errorf("merge: replace ops %d–%d: sync %s: %w", committed, i-1, e.base.Name(), err)
		}
		if err := e.commit(uint64(i)); err != nil {
			return err
		}
		e.checkpoint(Checkpoint{Kind: ReplaceCommitted, NumMergeOps: uint64(i), Start: uint64(committed), Ops: pending})
		committed, pending, pendingBlocks = i, 0, 0
		return nil
	}
	for i < len(e.order) {
		if err := e.safePoint(ctx); err != nil {
			return err
		}
		first := &e.order[i]
		j, blocks := i, uint64(0)
		for j < len(e.order) && (e.opts.MergeSize <= 0 || j-i < e.opts.MergeSize) {
			op := &e.order[j]
			if blocks+op.Blocks() > ReplaceRunBlocks || (j > i && op.NewBlock != first.NewBlock+blocks) {
				break
			}
			blocks += op.Blocks()
			j++
		}
		if j == i { // a single op larger than a run: cannot happen for factor ≤ 64 blocks
			return fmt.Errorf("merge: merge-order op %d (%s) exceeds the %d-block run buffer: %w", i, first, ReplaceRunBlocks, cow.ErrUnsupported)
		}
		off := int64(0)
		for k := i; k < j; k++ {
			op := &e.order[k]
			n := int64(op.Blocks()) * bs
			p := buf[off : off+n]
			if op.Type == cow.OpZero {
				clear(p)
			} else if err := e.readPayload(k, p, 0); err != nil {
				return err
			}
			off += n
		}
		if err := faultfs.WriteFull(e.base, buf[:off], int64(first.NewBlock)*bs); err != nil {
			return fmt.Errorf("merge: replace ops %d–%d: %w", i, j-1, err)
		}
		startWriteback(e.base, int64(first.NewBlock)*bs, off)
		pending += j - i
		pendingBlocks += blocks
		i = j
		if pendingBlocks >= commitBlocks {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}
