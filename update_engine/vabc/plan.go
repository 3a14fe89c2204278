package vabc

import (
	"fmt"
	"math"

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

// blocksOf expands extents into block numbers (holes excluded).
func blocksOf(ext []*metadata.Extent) []uint64 {
	var out []uint64
	for _, e := range ext {
		if e.GetStartBlock() == payload.SparseHole {
			continue
		}
		for i := range e.GetNumBlocks() {
			out = append(out, e.GetStartBlock()+i)
		}
	}
	return out
}

// mergeBlockOrder returns the order in which the blocks of one merge op are
// merged (spec §3.9): overlapping extents ascend when dst starts at or below
// src and descend otherwise; disjoint ones ascend (userspace snapshots).
func mergeBlockOrder(dst, src, n uint64) []uint64 {
	idx := make([]uint64, n)
	overlap := dst < src+n && src < dst+n
	desc := overlap && dst > src
	for i := range n {
		if desc {
			idx[i] = n - 1 - i
		} else {
			idx[i] = i
		}
	}
	return idx
}

// planMerge checks the merge_operations of pu against its install operations
// and derives the sequence, the up-front Copy ops and the XOR map. xorOn
// selects whether COW_XOR hints are used at all.
func planMerge(pu *metadata.PartitionUpdate, bs int64, srcBlocks uint64, xorOn bool) (*mergePlan, error) {
	name := pu.GetPartitionName()
	// Which (dst, src) pairs SOURCE_COPY operations copy, and which dst
	// blocks bsdiff operations write.
	copyPairs := make(map[uint64]uint64)
	diffDst := make(map[uint64]bool)
	// A COW holds one op per block (readers use the first); a payload that
	// writes a block twice cannot be expressed faithfully.
	owner := make(map[uint64]int)
	for i, op := range pu.Operations {
		for _, b := range blocksOf(op.DstExtents) {
			if j, ok := owner[b]; ok {
				return nil, fmt.Errorf("vabc: partition %s: block %d is written by op %d and op %d; a COW cannot express that: %w", name, b, j, i, ErrUnsupported)
			}
			owner[b] = i
		}
		switch op.GetType() {
		case metadata.InstallOperation_SOURCE_COPY:
			d, s := blocksOf(op.DstExtents), blocksOf(op.SrcExtents)
			if len(d) != len(s) {
				return nil, fmt.Errorf("vabc: partition %s op %d (SOURCE_COPY): %d destination blocks but %d source blocks", name, i, len(d), len(s))
			}
			for k := range d {
				copyPairs[d[k]] = s[k]
			}
		case metadata.InstallOperation_SOURCE_BSDIFF, metadata.InstallOperation_BROTLI_BSDIFF:
			for _, b := range blocksOf(op.DstExtents) {
				diffDst[b] = true
			}
		}
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
			for _, i := range mergeBlockOrder(dst, src, n) {
				d, s := dst+i, src+i
				if seen[d] || s >= srcBlocks {
					p.dropped++
					continue
				}
				if cs, ok := copyPairs[d]; !ok || cs != s {
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
			for _, i := range mergeBlockOrder(dst, src, n) {
				d, s := dst+i, src+i
				if seen[d] || !diffDst[d] || s >= srcBlocks {
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
