package cow

import (
	"encoding/binary"
	"fmt"
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
	blockMap := make(map[uint32]int, len(r.ops)) // new_block → first op index

	addBlock := func(nb uint32, i int) {
		if _, ok := blockMap[nb]; !ok {
			blockMap[nb] = i
		}
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

	for _, b := range order {
		if _, ok := blockMap[b]; !ok {
			return &FormatError{Path: r.opts.Path, Off: -1, Op: -1,
				Msg: "Invalid Sequence Ops: no op for new block", Val: b}
		}
	}
	if n := uint64(len(order)); n > r.hdr.NumMergeOps {
		r.numOrderedToMerge = n - r.hdr.NumMergeOps
	}

	// AOSP keeps other_ops in a std::vector<int> and sorts it as signed
	// ints, so blocks ≥ 2^31 sort before the others. Mirror that.
	if r.opts.Legacy {
		slices.SortFunc(other, func(a, b uint32) int { return cmpInt32(int32(b), int32(a)) })
	} else {
		slices.SortFunc(other, func(a, b uint32) int { return cmpInt32(int32(a), int32(b)) })
	}
	order = append(order, other...)

	r.mergeIdx = make([]int, len(order))
	for i, b := range order {
		r.mergeIdx[i] = blockMap[b]
	}
	r.mergeOpStart = r.hdr.NumMergeOps
	return nil
}

func cmpInt32(a, b int32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
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
