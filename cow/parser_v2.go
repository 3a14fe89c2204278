package cow

import (
	"fmt"
	"io"
)

// chunkReader serves fixed-size records from an io.ReaderAt through a small
// window, so that a huge cluster_ops value never turns into a huge read.
type chunkReader struct {
	ra   io.ReaderAt
	size int64
	buf  []byte
	off  int64 // file offset of buf[0]
	n    int   // valid bytes in buf
}

const chunkSize = 64 << 10

// at returns n bytes at pos; pos+n must be ≤ size.
func (c *chunkReader) at(pos int64, n int) ([]byte, error) {
	if pos >= c.off && pos+int64(n) <= c.off+int64(c.n) {
		return c.buf[pos-c.off : pos-c.off+int64(n)], nil
	}
	if c.buf == nil {
		c.buf = make([]byte, chunkSize)
	}
	want := min(int64(len(c.buf)), c.size-pos)
	if want < int64(n) {
		return nil, io.ErrUnexpectedEOF
	}
	got, err := c.ra.ReadAt(c.buf[:want], pos)
	if int64(got) < int64(n) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	c.off, c.n = pos, got
	return c.buf[:n], nil
}

// parseV2 implements the v1/v2 parser (§2.1, §2.7) and the translation to the
// common in-memory form (§2.7 step 4).
func (r *Reader) parseV2() error {
	h := &r.hdr
	if h.FooterSize != FooterSize {
		return formatErr(14, "v2: footer_size must be 84, got", h.FooterSize)
	}
	if h.OpSize != OpV2Size {
		return formatErr(16, "v2: op_size must be 20, got", h.OpSize)
	}
	if h.ClusterOps == 1 {
		return formatErr(22, "v2: cluster_ops 1 is invalid", nil)
	}
	if h.MinorVersion != 0 {
		return formatErr(10, "unsupported minor_version", h.MinorVersion)
	}
	if !h.Version().HasBufferSize() {
		// v1 has no buffer_size field; a header_size > 34 must not make
		// trailing bytes count as one (§2.1).
		h.BufferSize = 0
	}
	ops := h.OpsStart()
	if ops > r.size {
		return formatErr(34, "v2: scratch region extends past end of file: buffer_size", h.BufferSize)
	}

	// Positions are kept in uint64: every addend is bounded (cluster skips
	// are checked against the file size before use), so nothing overflows.
	pos := uint64(ops)
	var dataPos uint64
	n := uint64(h.ClusterOps)
	if n != 0 {
		dataPos = pos + n*OpV2Size
	} else {
		dataPos = pos + OpV2Size
	}
	slots := max(n, 1) // ops per batch (AOSP reads a cluster's op region at once)
	size := uint64(r.size)
	cr := chunkReader{ra: r.ra, size: r.size}
	xorLoc := make(map[uint64]int64)
	var (
		list    []Op
		offsets []int64
		found   bool // requested label found
		done    bool
	)
	// Size the op list from the footer when the file ends with one (a
	// finalized file), never by more than the file can hold: growing by
	// append would briefly need three times the final list.
	if hint := r.footerHint(ops); hint > 0 {
		list, offsets = make([]Op, 0, hint), make([]int64, 0, hint)
	}
	for !done {
		if pos > size {
			return formatErr(int64(min(pos, 1<<62)), "v2: op stream continues past end of file (size", fmt.Sprintf("%d)", size))
		}
		batch := min(slots, (size-pos)/OpV2Size)
		if batch == 0 {
			break
		}
		for i := uint64(0); i < batch; i++ {
			rec, err := cr.at(int64(pos), OpV2Size)
			if err != nil {
				return fmt.Errorf("cow: %s: reading op at %#x: %w", r.name(), pos, err)
			}
			op := DecodeOpV2(rec)
			opPos := pos
			if !op.Type.valid() {
				// Not an op AOSP writes: stop here rather than read a sparse
				// or garbage region as millions of ops.
				return opErr(int64(len(list)), int64(opPos), "v2: unknown op type", uint8(op.Type))
			}
			if op.Type == OpXor {
				if _, ok := xorLoc[op.NewBlock]; !ok {
					xorLoc[op.NewBlock] = int64(dataPos)
				}
			}
			if op.Type == OpFooter {
				// Capture the footer, drop it from the op list, stop.
				if opPos+FooterSize > size {
					return opErr(int64(len(list)), int64(opPos), "v2: footer truncated", nil)
				}
				var full [FooterSize]byte
				if err := readAtFull(r.ra, full[:], int64(opPos)); err != nil {
					return fmt.Errorf("cow: %s: reading footer at %#x: %w", r.name(), opPos, err)
				}
				r.footer = DecodeFooter(full[:])
				r.hasFooter = true
				done = true
				break
			}
			// Next op position and data cursor (GetNextOpOffset /
			// GetNextDataOffset).
			pos += OpV2Size
			switch {
			case op.Type == OpCluster:
				if op.Source > size {
					return opErr(int64(len(list)), int64(opPos), "v2: cluster op skips past end of file: source", op.Source)
				}
				pos += op.Source
			case (op.Type == OpReplace || op.Type == OpXor) && n == 0:
				pos += uint64(op.DataLength)
			}
			dataPos += uint64(op.DataLength)
			switch {
			case op.Type == OpCluster:
				dataPos += n * OpV2Size
			case n == 0:
				dataPos += OpV2Size
			}

			list = append(list, op)
			offsets = append(offsets, int64(opPos))
			if op.Type == OpCluster {
				break
			}
			if op.Type == OpLabel {
				r.lastLabel, r.hasLabel = op.Source, true
				if r.opts.Label != nil && *r.opts.Label == op.Source {
					found, done = true, true
					break
				}
			}
		}
	}
	r.endOffset = int64(pos)
	r.dataCursor = int64(min(dataPos, 1<<62))

	if r.opts.Label != nil {
		if !found {
			last := "no labels found"
			if r.hasLabel {
				last = fmt.Sprintf("last label %d", r.lastLabel)
			}
			return fmt.Errorf("%w: %d not found in %s (%s)", ErrLabelNotFound, *r.opts.Label, r.name(), last)
		}
	} else if !r.hasFooter {
		return fmt.Errorf("%w in %s (file not finalized or truncated; %d ops parsed)", ErrNoFooter, r.name(), len(list))
	}
	if r.hasFooter {
		foot := int64(r.endOffset)
		if r.footer.NumOps != uint64(len(list)) {
			return formatErr(foot, fmt.Sprintf("v2: footer num_ops %d does not match ops found:", r.footer.NumOps), len(list))
		}
		if r.footer.OpsSize != uint64(len(list))*OpV2Size {
			return formatErr(foot, fmt.Sprintf("v2: footer ops_size %d does not match %d ops ×20:", r.footer.OpsSize, len(list)), uint64(len(list))*OpV2Size)
		}
	}

	// Translate (§2.7 step 4; parser_v2 Translate).
	for i := range list {
		op := &list[i]
		if op.NewBlock > 1<<32-1 {
			return opErr(int64(i), offsets[i], "v2: new_block does not fit in 32 bits:", op.NewBlock)
		}
		if op.Type != OpLabel && op.Source > MaxSource {
			return opErr(int64(i), offsets[i], "v2: source does not fit in 48 bits:", op.Source)
		}
		if op.Compression != CompressionNone {
			if _, ok := knownCompression(op.Compression); !ok {
				return opErr(int64(i), offsets[i], "v2: unknown compression", uint32(op.Compression))
			}
			if !op.Compression.IsStandard() && !r.opts.AllowNonstandard {
				return opErr(int64(i), offsets[i], fmt.Sprintf("v2: compression %s is a non-AOSP extension (AOSP readers reject it; allow it with ReaderOptions.AllowNonstandard):", op.Compression), uint32(op.Compression))
			}
			if r.compression == CompressionNone {
				r.compression = op.Compression
			} else if r.compression != op.Compression {
				return opErr(int64(i), offsets[i], fmt.Sprintf("v2: mixed compression types not supported: saw %s before, now", r.compression), op.Compression)
			}
		}
	}
	for i := range list {
		if list[i].Type == OpReplace || list[i].Type == OpXor {
			list[i].Compression = r.compression
		} else {
			list[i].Compression = CompressionNone
		}
	}
	r.ops, r.opOffsets, r.xorLoc = list, offsets, xorLoc
	return nil
}

// knownCompression reports whether c is in the name table.
func knownCompression(c Compression) (string, bool) {
	for _, n := range compressionNames {
		if n.v == c {
			return n.name, true
		}
	}
	return "", false
}

// valid reports whether t is an op type of the format (§2.2).
func (t OpType) valid() bool {
	return t >= OpCopy && t <= OpSequence || t == OpFooter
}

// footerHint returns footer.num_ops when the last 84 bytes of the file are a
// footer whose count fits between opsStart and it, else 0.
func (r *Reader) footerHint(opsStart int64) int {
	if r.size-opsStart < FooterSize {
		return 0
	}
	var b [FooterSize]byte
	if readAtFull(r.ra, b[:], r.size-FooterSize) != nil {
		return 0
	}
	if DecodeOpV2(b[:OpV2Size]).Type != OpFooter {
		return 0
	}
	n := DecodeFooter(b[:]).NumOps
	if n > uint64(r.size-FooterSize-opsStart)/OpV2Size {
		return 0
	}
	return int(n)
}
