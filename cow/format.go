package cow

import "strconv"

// Magic is the COW magic number, "!!WOcwoC" on disk (§1).
const Magic uint64 = 0x436f77634f572121

// Record sizes in bytes (§1–§3). A test checks every encoder against them.
const (
	PrefixSize       = 14 // magic, major, minor, header_size
	HeaderV1Size     = 34
	HeaderV2Size     = 38
	HeaderV3Size     = 78
	OpV2Size         = 20
	OpV3Size         = 16
	FooterSize       = 84 // an op-sized record plus 64 unused (zero) bytes
	FooterDataSize   = 64
	ResumePointSize  = 16
	ScratchEntrySize = 16
)

// Well-known values.
const (
	DefaultBlockSize = 4096
	// BufferRegionDefaultSize is the scratch (read-ahead) region size
	// (BUFFER_REGION_DEFAULT_SIZE).
	BufferRegionDefaultSize = 1 << 21
	// NumResumePoints is kNumResumePoints, the v3 writer's resume_point_max.
	NumResumePoints = 4
	// MaxCompressionSize is the largest v3 compression factor (256 KiB).
	MaxCompressionSize = 256 << 10
	// EndOfInstallLabel is update_engine's kEndOfInstallLabel.
	EndOfInstallLabel = 1 << 48
	// SequenceEntriesPerOp is how many u32 entries one v2 Sequence op holds
	// (2*block_size/4 for 4 KiB blocks).
	SequenceEntriesPerOp = 2048
	// DefaultClusterOps is CowOptions::cluster_ops today.
	DefaultClusterOps = 1024
	// MaxSource is the largest value the 48-bit v3 source field holds.
	MaxSource = 1<<48 - 1
)

// Scratch region read_ahead_state values (§5, BufferState).
const (
	ReadAheadNotStarted = 0
	ReadAheadInProgress = 1 // kCowReadAheadInProgress
	ReadAheadDone       = 2 // kCowReadAheadDone
)

// OpType is CowOperationType (§2.3).
type OpType uint8

const (
	OpCopy     OpType = 1
	OpReplace  OpType = 2
	OpZero     OpType = 3
	OpLabel    OpType = 4
	OpCluster  OpType = 5
	OpXor      OpType = 6
	OpSequence OpType = 7
	OpFooter   OpType = 255
)

var opTypeNames = []struct {
	v    OpType
	name string
}{
	{OpCopy, "copy"}, {OpReplace, "replace"}, {OpZero, "zero"}, {OpLabel, "label"},
	{OpCluster, "cluster"}, {OpXor, "xor"}, {OpSequence, "sequence"}, {OpFooter, "footer"},
}

// String returns the lower-case name used by cowctl --json ("copy", "xor", …).
func (t OpType) String() string {
	for _, n := range opTypeNames {
		if n.v == t {
			return n.name
		}
	}
	return "type(" + strconv.Itoa(int(t)) + ")"
}

// IsMetadata reports whether t is Label, Cluster, Footer or Sequence (IsMetadataOp).
func (t OpType) IsMetadata() bool {
	return t == OpLabel || t == OpCluster || t == OpFooter || t == OpSequence
}

// IsOrdered reports whether t reads the old image (Copy, Xor) and so must be
// merged in a safe order (IsOrderedOp).
func (t OpType) IsOrdered() bool { return t == OpCopy || t == OpXor }

// HasData reports whether ops of type t carry a payload in the data area.
func (t OpType) HasData() bool { return t == OpReplace || t == OpXor || t == OpSequence }

// Compression is CowCompressionAlgorithm (§2.4): a u8 in v2 ops, a u32 in the
// v3 header. Values ≥ 0xF0 are this project's non-AOSP extensions; AOSP
// readers reject them, so writers emit them only when explicitly allowed.
type Compression uint32

const (
	CompressionNone   Compression = 0
	CompressionGz     Compression = 1 // zlib stream (RFC 1950)
	CompressionBrotli Compression = 2 // raw brotli stream
	CompressionLz4    Compression = 3 // LZ4 block format, no frame
	CompressionZstd   Compression = 4 // zstd frame, window log = log2(unit size)

	// Non-AOSP extensions.
	CompressionSnappy Compression = 0xF0 // snappy block format
	CompressionXz     Compression = 0xF1 // xz stream
)

var compressionNames = []struct {
	v    Compression
	name string
}{
	{CompressionNone, "none"}, {CompressionGz, "gz"}, {CompressionBrotli, "brotli"},
	{CompressionLz4, "lz4"}, {CompressionZstd, "zstd"},
	{CompressionSnappy, "snappy"}, {CompressionXz, "xz"},
}

func (c Compression) String() string {
	for _, n := range compressionNames {
		if n.v == c {
			return n.name
		}
	}
	return "compression(" + strconv.Itoa(int(c)) + ")"
}

// IsStandard reports whether c is an AOSP algorithm (0–4).
func (c Compression) IsStandard() bool { return c <= CompressionZstd }

// ParseCompressionName maps "gz", "lz4", … to the algorithm ("" means none).
func ParseCompressionName(s string) (Compression, bool) {
	if s == "" {
		return CompressionNone, true
	}
	for _, n := range compressionNames {
		if n.name == s {
			return n.v, true
		}
	}
	return 0, false
}
