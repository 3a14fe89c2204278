package cow

import (
	"fmt"
)

// maxOpCountMax bounds op_count_max so that region offsets cannot overflow;
// the op region itself need not be present in full (a file without payloads
// ends after its last op).
const maxOpCountMax = 1 << 40

// parseV3 implements the v3 parser (§3.1, §3.3, §3.4).
func (r *Reader) parseV3() error {
	h := &r.hdr
	switch {
	case h.HeaderSize != HeaderV3Size:
		return formatErr(12, "v3: header_size must be 78, got", h.HeaderSize)
	case h.FooterSize != 0:
		return formatErr(14, "v3: footer_size must be 0, got", h.FooterSize)
	case h.OpSize != OpV3Size:
		return formatErr(16, "v3: op_size must be 16, got", h.OpSize)
	case h.ClusterOps != 0:
		return formatErr(22, "v3: cluster_ops must be 0, got", h.ClusterOps)
	case h.MinorVersion != 0:
		return formatErr(10, "unsupported minor_version", h.MinorVersion)
	}
	if _, ok := knownCompression(h.CompressionAlgorithm); !ok {
		return formatErr(70, "v3: unknown compression_algorithm", uint32(h.CompressionAlgorithm))
	}
	if !h.CompressionAlgorithm.IsStandard() && !r.opts.AllowNonstandard {
		return formatErr(70, fmt.Sprintf("v3: compression_algorithm %s is a non-AOSP extension (AOSP readers reject it; allow it with ReaderOptions.AllowNonstandard):", h.CompressionAlgorithm), uint32(h.CompressionAlgorithm))
	}
	r.compression = h.CompressionAlgorithm

	// Bound every count by the file size before computing offsets from it.
	seq := h.SequenceOffset()
	if seq > r.size {
		return formatErr(34, "v3: scratch region extends past end of file: buffer_size", h.BufferSize)
	}
	if h.SequenceDataCount > uint64(r.size-seq)/4 {
		return formatErr(38, "v3: sequence region extends past end of file: sequence_data_count", h.SequenceDataCount)
	}
	res := h.ResumeOffset()
	if uint64(h.ResumePointMax) > uint64(r.size-res)/ResumePointSize {
		return formatErr(50, "v3: resume region extends past end of file: resume_point_max", h.ResumePointMax)
	}
	if h.OpCountMax > maxOpCountMax {
		return formatErr(62, "v3: op_count_max implausibly large:", h.OpCountMax)
	}
	if h.OpCount > h.OpCountMax {
		return formatErr(54, fmt.Sprintf("v3: op_count exceeds op_count_max %d:", h.OpCountMax), h.OpCount)
	}

	count := h.OpCount
	if r.opts.Label != nil {
		// Search only the genuine resume entries: resume_point_count is
		// incremented on every label and never clamped (§3.4 quirk), so it
		// may point far past the resume region into the op region.
		want := *r.opts.Label
		n := min(uint64(h.ResumePointCount), uint64(h.ResumePointMax))
		buf := make([]byte, n*ResumePointSize)
		if len(buf) > 0 {
			if err := readAtFull(r.ra, buf, res); err != nil {
				return fmt.Errorf("cow: %s: reading resume points at %#x: %w", r.name(), res, err)
			}
		}
		found := false
		for i := uint64(0); i < n; i++ {
			rp := DecodeResumePoint(buf[i*ResumePointSize:])
			if rp.Label == want {
				count, found = rp.OpIndex, true
				break
			}
		}
		if !found {
			return fmt.Errorf("%w: %d not among the %d resume points of %s", ErrLabelNotFound, want, n, r.name())
		}
		if count > h.OpCountMax {
			return formatErr(res, fmt.Sprintf("v3: resume point for label %d has op_index beyond op_count_max %d:", want, h.OpCountMax), count)
		}
	}

	opsOff := h.OpOffset(0)
	if opsOff > r.size || count > uint64(r.size-opsOff)/OpV3Size {
		return formatErr(opsOff, fmt.Sprintf("v3: op region truncated: %d ops do not fit in file of size", count), r.size)
	}
	r.ops = make([]Op, count)
	r.opOffsets = make([]int64, count)
	r.xorLoc = make(map[uint64]int64)
	cr := chunkReader{ra: r.ra, size: r.size}
	cursor := uint64(h.DataOffset())
	for i := uint64(0); i < count; i++ {
		off := h.OpOffset(i)
		rec, err := cr.at(off, OpV3Size)
		if err != nil {
			return fmt.Errorf("cow: %s: reading op %d at %#x: %w", r.name(), i, off, err)
		}
		op := DecodeOpV3(rec)
		switch op.Type {
		case OpCopy, OpZero:
		case OpXor:
			if _, ok := r.xorLoc[op.NewBlock]; !ok {
				r.xorLoc[op.NewBlock] = int64(cursor)
			}
			op.Compression = r.compression
		case OpReplace:
			if op.Source != cursor {
				return opErr(int64(i), off, fmt.Sprintf("v3: replace payload not at data cursor %#x: source", cursor), fmt.Sprintf("%#x", op.Source))
			}
			op.Compression = r.compression
		default:
			return opErr(int64(i), off, "v3: op type not allowed in op region:", op.Type)
		}
		cursor += uint64(op.DataLength)
		r.ops[i] = op
		r.opOffsets[i] = off
	}
	r.endOffset = h.OpOffset(count)
	r.dataCursor = int64(cursor)
	return nil
}
