package cow

import (
	"fmt"
	"io"
)

// Header is the union of CowHeader (v1 34 B, v2 38 B) and CowHeaderV3 (78 B).
// Fields beyond HeaderSize decode as zero, as in AOSP's ReadCowHeader (§1).
type Header struct {
	Magic        uint64 // magic
	MajorVersion uint16 // major_version: 1, 2 or 3
	MinorVersion uint16 // minor_version: 0
	HeaderSize   uint16 // header_size: 34, 38 or 78

	FooterSize  uint16 // footer_size: 84 (v1/v2), 0 (v3)
	OpSize      uint16 // op_size: 20 (v1/v2), 16 (v3)
	BlockSize   uint32 // block_size: 4096
	ClusterOps  uint32 // cluster_ops: op slots per cluster (v2); 0 in v3; 1 is invalid
	NumMergeOps uint64 // num_merge_ops: merge progress, index into merge order (§4.5)
	BufferSize  uint32 // buffer_size: scratch region size, 0 or 2 MiB (absent in v1)

	// v3 only.
	SequenceDataCount    uint64      // sequence_data_count: u32 entries in the sequence region
	ResumePointCount     uint32      // resume_point_count: labels emitted, unbounded (§3.4 quirk)
	ResumePointMax       uint32      // resume_point_max: resume region capacity (4)
	OpCount              uint64      // op_count: valid ops in the op region
	OpCountMax           uint64      // op_count_max: op region capacity
	CompressionAlgorithm Compression // compression_algorithm (file-wide)
	MaxCompressionSize   uint32      // max_compression_size: compression factor in bytes
}

// Header field offsets used by in-place updates (merge progress commits).
const (
	OffsetNumMergeOps = 26 // num_merge_ops, u64, same in v2 and v3
	OffsetBufferSize  = 34
)

// HasScratch reports whether the image has a scratch region after the header
// (major ≥ 2 and buffer_size > 0).
func (h *Header) HasScratch() bool { return h.Version().HasBufferSize() && h.BufferSize > 0 }

// ScratchOffset is where the scratch region (and its BufferState byte) starts.
func (h *Header) ScratchOffset() int64 { return int64(h.HeaderSize) }

// OpsStart is where the v1/v2 op stream or the v3 sequence region starts.
func (h *Header) OpsStart() int64 {
	if h.HasScratch() {
		return int64(h.HeaderSize) + int64(h.BufferSize)
	}
	return int64(h.HeaderSize)
}

// v3 region offsets (§3.3).

// SequenceOffset is SEQ, the start of the v3 sequence region.
func (h *Header) SequenceOffset() int64 { return h.OpsStart() }

// ResumeOffset is RES, the start of the v3 resume-point region.
func (h *Header) ResumeOffset() int64 { return h.SequenceOffset() + int64(h.SequenceDataCount)*4 }

// OpOffset is OPS + 16*i, the position of v3 op i.
func (h *Header) OpOffset(i uint64) int64 {
	return h.ResumeOffset() + int64(h.ResumePointMax)*ResumePointSize + int64(i)*OpV3Size
}

// DataOffset is DATA, the start of the v3 data region.
func (h *Header) DataOffset() int64 { return h.OpOffset(h.OpCountMax) }

// MarshalBinary encodes the header in exactly HeaderSize bytes (34, 38 or 78).
func (h *Header) MarshalBinary() ([]byte, error) {
	switch h.HeaderSize {
	case HeaderV1Size, HeaderV2Size, HeaderV3Size:
	default:
		return nil, fmt.Errorf("cow: cannot encode header of size %d", h.HeaderSize)
	}
	full := make([]byte, HeaderV3Size)
	b := writeBuf(full)
	b.uint64(h.Magic)
	b.uint16(h.MajorVersion)
	b.uint16(h.MinorVersion)
	b.uint16(h.HeaderSize)
	b.uint16(h.FooterSize)
	b.uint16(h.OpSize)
	b.uint32(h.BlockSize)
	b.uint32(h.ClusterOps)
	b.uint64(h.NumMergeOps)
	b.uint32(h.BufferSize)
	b.uint64(h.SequenceDataCount)
	b.uint32(h.ResumePointCount)
	b.uint32(h.ResumePointMax)
	b.uint64(h.OpCount)
	b.uint64(h.OpCountMax)
	b.uint32(uint32(h.CompressionAlgorithm))
	b.uint32(h.MaxCompressionSize)
	return full[:h.HeaderSize], nil
}

// decodeHeader decodes a zero-padded 78-byte buffer.
func decodeHeader(full []byte) Header {
	var h Header
	b := readBuf(full[:HeaderV3Size])
	h.Magic = b.uint64()
	h.MajorVersion = b.uint16()
	h.MinorVersion = b.uint16()
	h.HeaderSize = b.uint16()
	h.FooterSize = b.uint16()
	h.OpSize = b.uint16()
	h.BlockSize = b.uint32()
	h.ClusterOps = b.uint32()
	h.NumMergeOps = b.uint64()
	h.BufferSize = b.uint32()
	h.SequenceDataCount = b.uint64()
	h.ResumePointCount = b.uint32()
	h.ResumePointMax = b.uint32()
	h.OpCount = b.uint64()
	h.OpCountMax = b.uint64()
	h.CompressionAlgorithm = Compression(b.uint32())
	h.MaxCompressionSize = b.uint32()
	return h
}

// ReadHeader reads the header as AOSP's ReadCowHeader does (§1): read the
// 14-byte prefix, check the magic, reject header_size > 78, then read exactly
// header_size bytes into a zeroed v3-sized header. It does not validate
// version-specific fields; the version parsers do.
func ReadHeader(r io.ReaderAt) (Header, error) {
	full := make([]byte, HeaderV3Size)
	if _, err := r.ReadAt(full[:PrefixSize], 0); err != nil {
		return Header{}, fmt.Errorf("%w: reading header prefix: %v", ErrCorrupt, err)
	}
	p := decodeHeader(full)
	if p.Magic != Magic {
		return Header{}, formatErr(0, "bad magic", fmt.Sprintf("%#x", p.Magic))
	}
	if p.HeaderSize > HeaderV3Size || p.HeaderSize < PrefixSize {
		return Header{}, formatErr(12, "invalid header_size", p.HeaderSize)
	}
	if _, err := r.ReadAt(full[:p.HeaderSize], 0); err != nil {
		return Header{}, fmt.Errorf("%w: reading %d-byte header: %v", ErrCorrupt, p.HeaderSize, err)
	}
	return decodeHeader(full), nil
}
