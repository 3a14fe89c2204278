package cow

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// prepMergeOps builds the final merge order exactly as AOSP PrepMergeOps
// (§4.3). It defines what header.num_merge_ops counts, so it must be
// bit-exact: a device may reboot mid-merge between this implementation and
// AOSP's.
func (r *Reader) prepMergeOps() error {
	var (
		order []uint32 // merge_op_blocks
		other []uint32 // other_ops
	)
	seqSet := make(map[uint32]struct{})
	// new_block → first op index, as a sorted list of new_block<<32 | index
	// (8 bytes per op; a map took ~40 and most of the parse time).
	if uint64(len(r.ops)) > math.MaxUint32 {
		return fmt.Errorf("cow: %s: %d ops: more than 2^32", r.name(), len(r.ops))
	}
	blockKeys := make([]uint64, 0, len(r.ops))
	addBlock := func(nb uint32, i int) {
		blockKeys = append(blockKeys, uint64(nb)<<32|uint64(i))
	}

	if r.hdr.Version().FixedRegions() {
		// GetSequenceData: the sequence region, then every op.
		cnt := r.hdr.SequenceDataCount // bounded by the file size in parseV3
		if cnt > 0 {
			buf := make([]byte, cnt*4)
			if err := r.readRaw(buf, r.hdr.SequenceOffset()); err != nil {
				return fmt.Errorf("cow: %s: reading sequence region: %w", r.name(), err)
			}
			order = make([]uint32, cnt, int(cnt)+len(r.ops))
			for i := range order {
				order[i] = binary.LittleEndian.Uint32(buf[4*i:])
				seqSet[order[i]] = struct{}{}
			}
		}
		r.seq = slices.Clone(order)
		for i := range r.ops {
			nb := uint32(r.ops[i].NewBlock)
			if len(seqSet) == 0 {
				// Without sequence data every op is merged in file order.
				order = append(order, nb)
			} else if _, ok := seqSet[nb]; !ok {
				other = append(other, nb)
			}
			addBlock(nb, i)
		}
	} else {
		// GetSequenceDataV2: sequence ops contribute their entries as they
		// are met; ordered ops go first only while no sequence was seen.
		// The sequence names data ops' blocks, so it cannot hold more
		// entries than there are data ops: checked before any is read
		// (sequence payloads may overlap, so a small file could otherwise
		// claim millions of entries).
		var dataOps, seqEntries uint64
		for i := range r.ops {
			switch t := r.ops[i].Type; {
			case t == OpSequence:
				seqEntries += uint64(r.ops[i].DataLength) / 4
			case !t.IsMetadata():
				dataOps++
			}
		}
		if seqEntries > dataOps {
			return &FormatError{Path: r.opts.Path, Off: -1, Op: -1,
				Msg: fmt.Sprintf("v2: sequence ops hold %d entries but the file has only %d data ops:", seqEntries, dataOps), Val: seqEntries}
		}
		for i := range r.ops {
			op := &r.ops[i]
			if op.Type == OpSequence {
				if op.DataLength%4 != 0 {
					return opErr(int64(i), r.opOffsets[i], "v2: sequence op data_length not a multiple of 4:", op.DataLength)
				}
				buf := make([]byte, op.DataLength)
				if err := r.readRaw(buf, int64(op.Source)); err != nil {
					return r.annotate(err, i, "reading sequence op payload")
				}
				for j := 0; j < len(buf); j += 4 {
					b := binary.LittleEndian.Uint32(buf[j:])
					order = append(order, b)
					r.seq = append(r.seq, b)
					seqSet[b] = struct{}{}
				}
			}
			if op.Type.IsMetadata() {
				continue
			}
			nb := uint32(op.NewBlock) // fits: checked by the translation
			if len(seqSet) == 0 && op.Type.IsOrdered() {
				order = append(order, nb)
			} else if _, ok := seqSet[nb]; !ok {
				other = append(other, nb)
			}
			addBlock(nb, i)
		}
	}

	// Sorted by block then index: the first key of each block holds the
	// first op writing it.
	slices.Sort(blockKeys)
	blockKeys = slices.CompactFunc(blockKeys, func(a, b uint64) bool { return a>>32 == b>>32 })
	// Merge orders are mostly ascending runs of blocks: look next to the
	// previous hit first, binary-search otherwise (8M ops: the search was
	// a third of the parse).
	cursor := 0
	firstOp := func(b uint32) (int, bool) {
		for k := cursor; k < cursor+2 && k < len(blockKeys); k++ {
			if uint32(blockKeys[k]>>32) == b {
				cursor = k
				return int(uint32(blockKeys[k])), true
			}
		}
		k, found := slices.BinarySearchFunc(blockKeys, b, func(key uint64, b uint32) int { return cmp.Compare(uint32(key>>32), b) })
		if !found {
			return 0, false
		}
		cursor = k
		return int(uint32(blockKeys[k])), true
	}
	for _, b := range order {
		if _, ok := firstOp(b); !ok {
			return &FormatError{Path: r.opts.Path, Off: -1, Op: -1,
				Msg: "Invalid Sequence Ops: no op for new block", Val: b}
		}
	}
	if n := uint64(len(order)); n > r.hdr.NumMergeOps {
		r.numOrderedToMerge = n - r.hdr.NumMergeOps
	}

	// AOSP keeps other_ops in a std::vector<int> and sorts it as signed
	// ints, so blocks ≥ 2^31 sort before the others. Mirror that.
	// Flipping the sign bit makes the unsigned order the signed one, so
	// the fast ordered sort applies (8M ops: 4× faster than SortFunc).
	for k := range other {
		other[k] ^= 1 << 31
	}
	slices.Sort(other)
	for k := range other {
		other[k] ^= 1 << 31
	}
	if r.opts.Legacy {
		slices.Reverse(other)
	}
	order = append(order, other...)

	r.mergeIdx = make([]int, len(order))
	for i, b := range order {
		r.mergeIdx[i], _ = firstOp(b)
	}
	r.mergeOpStart = r.hdr.NumMergeOps
	return nil
}

// annotate fills op index and path into a FormatError from readRaw.
func (r *Reader) annotate(err error, i int, what string) error {
	if fe, ok := err.(*FormatError); ok {
		fe.Op = int64(i)
		fe.Path = r.opts.Path
		fe.Msg = what + ": " + fe.Msg
		return fe
	}
	return fmt.Errorf("cow: %s: op %d: %s: %w", r.name(), i, what, err)
}
