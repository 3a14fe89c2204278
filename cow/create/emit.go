package create

import (
	"context"
	"fmt"
)

// Writer is what Emit needs from a COW writer; cow's v2 and v3 writers
// implement it (through a thin adapter in this package), and so does the
// size-only estimator.
type Writer interface {
	// AddSequenceData records the merge order of the ordered ops.
	AddSequenceData(seq []uint32) error
	AddCopy(newBlock, oldBlock, numBlocks uint64) error
	// AddRawBlocks adds Replace data for consecutive blocks from
	// newBlockStart; the writer compresses it (and, on v3, splits it into
	// units of the compression factor).
	AddRawBlocks(newBlockStart uint64, data []byte) error
	// AddXorBlocks adds XOR data for consecutive blocks; source byte offset
	// is oldBlock*block_size+offset.
	AddXorBlocks(newBlockStart uint64, data []byte, oldBlock uint64, offset uint16) error
	AddZeroBlocks(start, n uint64) error
}

// maxRunBlocks caps one AddRawBlocks call (1 MiB of 4 KiB blocks). It is a
// multiple of every v3 compression factor (≤ 256 KiB), so the writer's
// split into units does not depend on it beyond run boundaries.
const maxRunBlocks = 256

// Emit writes the plan through w: sequence data, the ordered ops in merge
// order, then Replace runs and Zero runs in ascending block order. Target
// data is re-read from tgt, source data (for Xor) from src. progress, if not
// nil, gets the target bytes emitted so far.
func Emit(ctx context.Context, p *Plan, src, tgt Image, w Writer, progress func(done, total int64)) error {
	bs := p.BlockSize
	total := int64(len(p.Blocks)) * int64(bs)
	var done int64
	report := func(blocks uint64) {
		done += int64(blocks) * int64(bs)
		if progress != nil {
			progress(done, total)
		}
	}
	if len(p.Order) > 0 {
		if err := w.AddSequenceData(p.Order); err != nil {
			return fmt.Errorf("create: sequence data: %w", err)
		}
	}
	tb := make([]byte, bs)
	sb := make([]byte, bs)
	for i := 0; i < len(p.Order); {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		t := uint64(p.Order[i])
		op := p.Blocks[t]
		switch op.Kind {
		case KindCopy:
			// Coalesce t←s, t+1←s+1, … when consecutive in merge order.
			n := 1
			for i+n < len(p.Order) && uint64(p.Order[i+n]) == t+uint64(n) {
				nx := p.Blocks[t+uint64(n)]
				if nx.Kind != KindCopy || nx.Src != op.Src+uint64(n) {
					break
				}
				n++
			}
			if err := w.AddCopy(t, op.Src, uint64(n)); err != nil {
				return fmt.Errorf("create: copy op for block %d: %w", t, err)
			}
			i += n
			report(uint64(n))
		case KindXor:
			if err := tgt.readPadded(tb, int64(t)*int64(bs)); err != nil {
				return err
			}
			if err := src.readPadded(sb, int64(op.Src)); err != nil {
				return err
			}
			for j := range tb {
				tb[j] ^= sb[j]
			}
			if err := w.AddXorBlocks(t, tb, op.Src/uint64(bs), uint16(op.Src%uint64(bs))); err != nil {
				return fmt.Errorf("create: xor op for block %d: %w", t, err)
			}
			i++
			report(1)
		default:
			return fmt.Errorf("create: internal error: merge order names block %d of kind %s", t, op.Kind)
		}
	}
	run := make([]byte, maxRunBlocks*bs)
	n := uint64(len(p.Blocks))
	for t := uint64(0); t < n; {
		if err := ctx.Err(); err != nil {
			return err
		}
		if p.Blocks[t].Kind != KindReplace {
			t++
			continue
		}
		e := t + 1
		for e < n && e-t < maxRunBlocks && p.Blocks[e].Kind == KindReplace {
			e++
		}
		data := run[:(e-t)*uint64(bs)]
		if err := tgt.readPadded(data, int64(t)*int64(bs)); err != nil {
			return err
		}
		if err := w.AddRawBlocks(t, data); err != nil {
			return fmt.Errorf("create: replace ops for blocks %d..%d: %w", t, e-1, err)
		}
		report(e - t)
		t = e
	}
	for t := uint64(0); t < n; {
		if p.Blocks[t].Kind != KindZero {
			t++
			continue
		}
		e := t + 1
		for e < n && p.Blocks[e].Kind == KindZero {
			e++
		}
		if err := w.AddZeroBlocks(t, e-t); err != nil {
			return fmt.Errorf("create: zero ops for blocks %d..%d: %w", t, e-1, err)
		}
		report(e - t)
		t = e
	}
	return nil
}
