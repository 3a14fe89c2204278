package cow

import "fmt"

// Op is the in-memory form of an operation, common to all versions (AOSP
// translates v2 ops into CowOperationV3; so do we).
type Op struct {
	Type OpType
	// Compression is the v2 per-op algorithm byte. For v3 ops it is filled in
	// from the header's file-wide algorithm by the reader.
	Compression Compression
	// DataLength is data_length: stored payload bytes.
	DataLength uint32
	// NewBlock is new_block: the destination block (first block for
	// multi-block Replace ops). v2 ops may carry up to 64 bits on disk.
	NewBlock uint64
	// Source is type-dependent (§2.2, §3.2): Copy → source block; Replace →
	// absolute payload offset; Xor → source byte offset; Label → label value;
	// Cluster → bytes to skip; Sequence → payload offset.
	Source uint64
	// FactorShift is k: the op covers block_size<<k bytes (v3 Replace only).
	FactorShift uint8
}

// Blocks is how many destination blocks the op covers.
func (o *Op) Blocks() uint64 { return 1 << o.FactorShift }

func (o Op) String() string {
	return fmt.Sprintf("%s new_block=%d source=%d data_length=%d compression=%s factor=%d",
		o.Type, o.NewBlock, o.Source, o.DataLength, o.Compression, 1<<o.FactorShift)
}

// DecodeOpV2 decodes a 20-byte CowOperationV2 (§2.2).
func DecodeOpV2(p []byte) Op {
	b := readBuf(p[:OpV2Size])
	var o Op
	o.Type = OpType(b.uint8())
	o.Compression = Compression(b.uint8())
	o.DataLength = uint32(b.uint16())
	o.NewBlock = b.uint64()
	o.Source = b.uint64()
	return o
}

// AppendOpV2 appends the 20-byte v2 encoding of o. The caller guarantees the
// fields fit (compression < 256, data_length < 65536).
func AppendOpV2(dst []byte, o Op) []byte {
	var rec [OpV2Size]byte
	b := writeBuf(rec[:])
	b.uint8(uint8(o.Type))
	b.uint8(uint8(o.Compression))
	b.uint16(uint16(o.DataLength))
	b.uint64(o.NewBlock)
	b.uint64(o.Source)
	return append(dst, rec[:]...)
}

// v3 source_info bit layout (§3.2).
const (
	v3TypeShift   = 60
	v3FactorShift = 57
	v3FactorMask  = 0x7
	v3SourceMask  = 1<<48 - 1
)

// DecodeOpV3 decodes a 16-byte CowOperationV3. Compression is left as none;
// the reader fills in the file-wide algorithm.
func DecodeOpV3(p []byte) Op {
	b := readBuf(p[:OpV3Size])
	var o Op
	o.DataLength = b.uint32()
	o.NewBlock = uint64(b.uint32())
	si := b.uint64()
	o.Type = OpType(si >> v3TypeShift)
	o.FactorShift = uint8((si >> v3FactorShift) & v3FactorMask)
	o.Source = si & v3SourceMask
	return o
}

// AppendOpV3 appends the 16-byte v3 encoding of o. The caller guarantees
// NewBlock < 2^32, Source < 2^48, Type < 16, FactorShift < 8.
func AppendOpV3(dst []byte, o Op) []byte {
	var rec [OpV3Size]byte
	b := writeBuf(rec[:])
	b.uint32(o.DataLength)
	b.uint32(uint32(o.NewBlock))
	b.uint64(uint64(o.Type)<<v3TypeShift | uint64(o.FactorShift&v3FactorMask)<<v3FactorShift | o.Source&v3SourceMask)
	return append(dst, rec[:]...)
}

// Footer is CowFooter (§2.5): an op-sized record followed by 64 bytes that
// every writer leaves zero (Android 12–14 readers require it).
type Footer struct {
	OpsSize uint64 // ops_size = num_ops * 20
	NumOps  uint64 // num_ops: ops before the footer, incl. label/cluster/sequence
	Unused  [FooterDataSize]byte
}

// AppendFooter appends the 84-byte footer encoding.
func AppendFooter(dst []byte, f Footer) []byte {
	dst = AppendOpV2(dst, Op{Type: OpFooter, DataLength: FooterDataSize, NewBlock: f.OpsSize, Source: f.NumOps})
	return append(dst, f.Unused[:]...)
}

// DecodeFooter decodes an 84-byte footer. The caller checks the type byte.
func DecodeFooter(p []byte) Footer {
	o := DecodeOpV2(p[:OpV2Size])
	f := Footer{OpsSize: o.NewBlock, NumOps: o.Source}
	copy(f.Unused[:], p[OpV2Size:FooterSize])
	return f
}

// ResumePoint is a v3 resume entry (§3.4).
type ResumePoint struct {
	Label   uint64 // label: update_engine's "next op index"
	OpIndex uint64 // op_index: ops valid when the label was emitted
}

func AppendResumePoint(dst []byte, r ResumePoint) []byte {
	var rec [ResumePointSize]byte
	b := writeBuf(rec[:])
	b.uint64(r.Label)
	b.uint64(r.OpIndex)
	return append(dst, rec[:]...)
}

func DecodeResumePoint(p []byte) ResumePoint {
	b := readBuf(p[:ResumePointSize])
	return ResumePoint{Label: b.uint64(), OpIndex: b.uint64()}
}

// ScratchEntry is ScratchMetadata (§5): where the read-ahead copy of
// new_block's data lives (absolute COW offset). An all-zero entry terminates
// the list.
type ScratchEntry struct {
	NewBlock   uint64
	FileOffset uint64
}

func AppendScratchEntry(dst []byte, e ScratchEntry) []byte {
	var rec [ScratchEntrySize]byte
	b := writeBuf(rec[:])
	b.uint64(e.NewBlock)
	b.uint64(e.FileOffset)
	return append(dst, rec[:]...)
}

func DecodeScratchEntry(p []byte) ScratchEntry {
	b := readBuf(p[:ScratchEntrySize])
	return ScratchEntry{NewBlock: b.uint64(), FileOffset: b.uint64()}
}

// ScratchLayout gives the scratch region's sub-areas for a header (§5).
type ScratchLayout struct {
	StateOffset    int64 // BufferState.read_ahead_state byte (header_size)
	MetadataOffset int64 // ScratchMetadata array (header_size + 1)
	MetadataSize   int64 // buffer_size*16/4096 (8192 for 2 MiB)
	DataOffset     int64 // read-ahead data (header_size + MetadataSize)
	DataBlocks     int64 // (buffer_size - MetadataSize) / block_size (510 for 2 MiB)
}

// Scratch returns the scratch layout, or false if the image has none.
func (h *Header) Scratch() (ScratchLayout, bool) {
	if !h.HasScratch() || h.BlockSize == 0 {
		return ScratchLayout{}, false
	}
	meta := int64(h.BufferSize) * ScratchEntrySize / int64(h.BlockSize)
	return ScratchLayout{
		StateOffset:    int64(h.HeaderSize),
		MetadataOffset: int64(h.HeaderSize) + 1,
		MetadataSize:   meta,
		DataOffset:     int64(h.HeaderSize) + meta,
		DataBlocks:     (int64(h.BufferSize) - meta) / int64(h.BlockSize),
	}, true
}
