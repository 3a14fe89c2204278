package vabc

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/payload"
)

// xorSrc is where a COW_XOR hint reads the source of one destination block.
type xorSrc struct {
	block  uint64
	offset uint32
}

// mergePlan is what the merge hints of a partition amount to after checking
// them against the install operations.
type mergePlan struct {
	// seq lists the destination blocks of the ordered ops in merge order.
	seq []uint32
	// copies are the Copy ops ([dst, src] per block) in merge order.
	copies [][2]uint64
	// copied is the set of dst blocks written as Copy ops up front.
	copied map[uint64]bool
	// xor maps dst blocks to their XOR source.
	xor map[uint64]xorSrc
	// dropped counts hint blocks that did not match the operations.
	dropped int
}

// span is one destination extent of an install operation: blocks
// [start, start+n), which are blocks [pos, pos+n) of the op's destination.
type span struct {
	start, n, pos uint64
	op            int
}

// opIndex finds the install operation writing each destination block
// without expanding extents: memory is proportional to the number of
// extents, not to the blocks they cover (a payload may claim 2^24 blocks
// in one extent).
type opIndex struct {
	spans []span // sorted by start, disjoint
}

func newOpIndex(pu *metadata.PartitionUpdate) (*opIndex, error) {
	var ix opIndex
	for i, op := range pu.Operations {
		var pos uint64
		for _, e := range op.DstExtents {
			if e.GetStartBlock() != payload.SparseHole && e.GetNumBlocks() > 0 {
				ix.spans = append(ix.spans, span{start: e.GetStartBlock(), n: e.GetNumBlocks(), pos: pos, op: i})
			}
			pos += e.GetNumBlocks()
		}
	}
	slices.SortFunc(ix.spans, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	for k := 1; k < len(ix.spans); k++ {
		a, b := ix.spans[k-1], ix.spans[k]
		if b.start < a.start+a.n {
			i, j := min(a.op, b.op), max(a.op, b.op)
			return nil, fmt.Errorf("vabc: partition %s: block %d is written by op %d and op %d; a COW cannot express that: %w", pu.GetPartitionName(), b.start, i, j, ErrUnsupported)
		}
	}
	return &ix, nil
}

// lookup returns the op writing block d and d's position in that op's
// destination.
func (ix *opIndex) lookup(d uint64) (op int, pos uint64, ok bool) {
	k, _ := slices.BinarySearchFunc(ix.spans, d, func(s span, d uint64) int {
		switch {
		case d < s.start:
			return 1
		case d >= s.start+s.n:
			return -1
		}
		return 0
	})
	if k < len(ix.spans) && d >= ix.spans[k].start && d < ix.spans[k].start+ix.spans[k].n {
		s := ix.spans[k]
		return s.op, s.pos + d - s.start, true
	}
	return 0, 0, false
}

// nthBlock returns the block at position pos of ext (holes count as
// blocks), or false past the end or on a hole.
func nthBlock(ext []*metadata.Extent, pos uint64) (uint64, bool) {
	for _, e := range ext {
		if pos < e.GetNumBlocks() {
			if e.GetStartBlock() == payload.SparseHole {
				return 0, false
			}
			return e.GetStartBlock() + pos, true
		}
		pos -= e.GetNumBlocks()
	}
	return 0, false
}

// mergeBlockOrder returns the i-th block (offset from the extent start)
// merged of one merge op of n blocks (spec §3.9): overlapping extents
// ascend when dst starts at or below src and descend otherwise; disjoint
// ones ascend (userspace snapshots).
func mergeBlockOrder(dst, src, n, i uint64) uint64 {
	overlap := dst < src+n && src < dst+n
	if overlap && dst > src {
		return n - 1 - i
	}
	return i
}

// planMerge checks the merge_operations of pu against its install operations
// and derives the sequence, the up-front Copy ops and the XOR map. xorOn
// selects whether COW_XOR hints are used at all.
func planMerge(pu *metadata.PartitionUpdate, bs int64, srcBlocks uint64, xorOn bool) (*mergePlan, error) {
	name := pu.GetPartitionName()
	ix, err := newOpIndex(pu)
	if err != nil {
		return nil, err
	}
	for i, op := range pu.Operations {
		if op.GetType() == metadata.InstallOperation_SOURCE_COPY {
			var d, s uint64
			for _, e := range op.DstExtents {
				d += e.GetNumBlocks()
			}
			for _, e := range op.SrcExtents {
				s += e.GetNumBlocks()
			}
			if d != s {
				return nil, fmt.Errorf("vabc: partition %s op %d (SOURCE_COPY): %d destination blocks but %d source blocks", name, i, d, s)
			}
		}
	}
	// copySrc is the source block a SOURCE_COPY op copies to d.
	copySrc := func(d uint64) (uint64, bool) {
		i, pos, ok := ix.lookup(d)
		if !ok || pu.Operations[i].GetType() != metadata.InstallOperation_SOURCE_COPY {
			return 0, false
		}
		return nthBlock(pu.Operations[i].SrcExtents, pos)
	}
	diffDst := func(d uint64) bool {
		i, _, ok := ix.lookup(d)
		if !ok {
			return false
		}
		t := pu.Operations[i].GetType()
		return t == metadata.InstallOperation_SOURCE_BSDIFF || t == metadata.InstallOperation_BROTLI_BSDIFF
	}
	p := &mergePlan{copied: make(map[uint64]bool), xor: make(map[uint64]xorSrc)}
	seen := make(map[uint64]bool)
	for mi, m := range pu.GetMergeOperations() {
		de, se := m.GetDstExtent(), m.GetSrcExtent()
		if de == nil || se == nil {
			return nil, fmt.Errorf("vabc: partition %s merge op %d: missing src_extent or dst_extent", name, mi)
		}
		dst, n, src := de.GetStartBlock(), de.GetNumBlocks(), se.GetStartBlock()
		if dst == payload.SparseHole || src == payload.SparseHole || dst+n < dst || src+n < src || dst+n > math.MaxUint32 {
			return nil, fmt.Errorf("vabc: partition %s merge op %d: invalid extents dst %d+%d src %d", name, mi, dst, n, src)
		}
		switch m.GetType() {
		case metadata.CowMergeOperation_COW_COPY:
			if dst == src {
				continue // identity copy: the block is already in place
			}
			if se.GetNumBlocks() != n {
				return nil, fmt.Errorf("vabc: partition %s merge op %d (COW_COPY): src has %d blocks, dst %d", name, mi, se.GetNumBlocks(), n)
			}
			for k := range n {
				i := mergeBlockOrder(dst, src, n, k)
				d, s := dst+i, src+i
				if seen[d] || s >= srcBlocks {
					p.dropped++
					continue
				}
				if cs, ok := copySrc(d); !ok || cs != s {
					p.dropped++
					continue
				}
				seen[d] = true
				p.copied[d] = true
				p.copies = append(p.copies, [2]uint64{d, s})
				p.seq = append(p.seq, uint32(d))
			}
		case metadata.CowMergeOperation_COW_XOR:
			if !xorOn {
				continue
			}
			off := m.GetSrcOffset()
			if int64(off) >= bs {
				return nil, fmt.Errorf("vabc: partition %s merge op %d (COW_XOR): src_offset %d not below the block size %d", name, mi, off, bs)
			}
			for k := range n {
				i := mergeBlockOrder(dst, src, n, k)
				d, s := dst+i, src+i
				if seen[d] || !diffDst(d) || s >= srcBlocks {
					p.dropped++
					continue
				}
				seen[d] = true
				p.xor[d] = xorSrc{block: s, offset: off}
				p.seq = append(p.seq, uint32(d))
			}
		default:
			// COW_REPLACE: the blocks are written as Replace ops anyway.
		}
	}
	return p, nil
}
