package cow

import (
	"errors"
	"fmt"
)

// ErrMergeOrder marks every violation reported by VerifyMergeOps.
var ErrMergeOrder = errors.New("cow: invalid merge sequence")

// MergeOrderError is one violation found by VerifyMergeOps. Step is the
// position in MergeOrder, Op the index into Ops().
type MergeOrderError struct {
	Path string
	Step int
	Op   int
	Msg  string
}

func (e *MergeOrderError) Error() string {
	s := "cow: "
	if e.Path != "" {
		s += e.Path + ": "
	}
	return s + fmt.Sprintf("merge step %d (op %d): %s", e.Step, e.Op, e.Msg)
}

func (e *MergeOrderError) Unwrap() error { return ErrMergeOrder }

// SourceOffset is GetSourceOffset (§4.2): Copy → source*block_size,
// Xor → source (bytes). Other ops read nothing from the source device.
func (r *Reader) SourceOffset(op *Op) (uint64, bool) {
	switch op.Type {
	case OpCopy:
		return op.Source * uint64(r.hdr.BlockSize), true
	case OpXor:
		return op.Source, true
	}
	return 0, false
}

// VerifyMergeOps checks the merge order from its first entry, as AOSP
// VerifyMergeOps (§4.3): no metadata op in the merge order; once a
// non-ordered op appears no ordered op may follow; and no op may read a
// source block (or the next block, for an unaligned XOR source) that an
// earlier op in the merge order has already overwritten. Unlike AOSP it does
// not stop at the first problem: it returns every violation (errors.Join of
// *MergeOrderError), or nil. It also reports op types unknown to the merge
// code and a num_merge_ops beyond the end of the merge order.
func (r *Reader) VerifyMergeOps() error {
	if r.opts.Label != nil {
		return fmt.Errorf("cow: %s: merge order is not prepared for a reader opened at a label", r.name())
	}
	var errs []error
	bad := func(step, op int, format string, args ...any) {
		errs = append(errs, &MergeOrderError{Path: r.opts.Path, Step: step, Op: op, Msg: fmt.Sprintf(format, args...)})
	}
	bs := uint64(r.hdr.BlockSize)
	if bs == 0 {
		bad(0, -1, "block_size is 0")
		return errors.Join(errs...)
	}
	overwritten := make(map[uint64]int) // new_block → merge step of an ordered op that wrote it
	nonOrderedSeen := -1
	for step, idx := range r.mergeIdx {
		op := &r.ops[idx]
		switch op.Type {
		case OpCopy, OpReplace, OpZero, OpXor:
		default:
			if op.Type.IsMetadata() {
				bad(step, idx, "metadata op %s in merge sequence", op.Type)
			} else {
				bad(step, idx, "unknown op type %d in merge sequence", uint8(op.Type))
			}
			continue
		}
		if !op.Type.IsOrdered() {
			if nonOrderedSeen < 0 {
				nonOrderedSeen = step
			}
		} else if nonOrderedSeen >= 0 {
			bad(step, idx, "ordered %s op (new_block %d) after non-ordered op at step %d: ordered and non-ordered ops are mixed",
				op.Type, op.NewBlock, nonOrderedSeen)
		}
		off, ok := r.SourceOffset(op)
		if !ok {
			continue
		}
		block := off / bs
		if prev, ok := overwritten[block]; ok {
			bad(step, idx, "%s op (new_block %d) reads source block %d, overwritten by merge step %d (op %d)",
				op.Type, op.NewBlock, block, prev, r.mergeIdx[prev])
		}
		if off%bs != 0 {
			if prev, ok := overwritten[block+1]; ok {
				bad(step, idx, "%s op (new_block %d) reads source block %d (unaligned), overwritten by merge step %d (op %d)",
					op.Type, op.NewBlock, block+1, prev, r.mergeIdx[prev])
			}
		}
		// AOSP records the last writer of each block.
		overwritten[op.NewBlock] = step
	}
	if r.mergeOpStart > uint64(len(r.mergeIdx)) {
		bad(len(r.mergeIdx), -1, "num_merge_ops %d exceeds the %d ops of the merge order", r.mergeOpStart, len(r.mergeIdx))
	}
	return errors.Join(errs...)
}
