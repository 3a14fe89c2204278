package cow

import "strconv"

// Version is a COW format major version (header major_version). Code asks a
// Version what the format has — a scratch region, fixed v3 regions, a
// file-wide compression — instead of comparing numbers, in the style of
// pebble's sstable TableFormat.
type Version uint16

const (
	V1 Version = 1 // Android 11: 34-byte header, 20-byte ops, footer
	V2 Version = 2 // Android 12–14: 38-byte header with buffer_size (scratch region)
	V3 Version = 3 // Android 15: 78-byte header, fixed regions, 16-byte ops, file-wide compression
)

// Version returns the header's major_version as a Version.
func (h *Header) Version() Version { return Version(h.MajorVersion) }

// String returns "v1", "v2", "v3" (or "v<n>" for an unknown version).
func (v Version) String() string { return "v" + strconv.Itoa(int(v)) }

// Known reports whether v is a version this package reads (1, 2 or 3).
func (v Version) Known() bool { return v >= V1 && v <= V3 }

// HasBufferSize reports whether the header carries buffer_size, so that a
// scratch (read-ahead) region may follow it (v2 and later).
func (v Version) HasBufferSize() bool { return v >= V2 }

// FixedRegions reports whether the file has v3's fixed sequence, resume-point
// and op regions instead of a v1/v2 op stream with clusters and a footer.
func (v Version) FixedRegions() bool { return v >= V3 }

// FileWideCompression reports whether one compression algorithm in the
// header applies to every op (v3); v1/v2 name it per op.
func (v Version) FileWideCompression() bool { return v >= V3 }

// RawAtUnitSize reports whether a gz or brotli payload whose data_length
// equals the unit size is stored raw (v3). v1/v2 always decompress them
// (AOSP bug 310191184); lz4, zstd and the others are raw at unit size in
// every version.
func (v Version) RawAtUnitSize() bool { return v >= V3 }

// HeaderSize is the size of the version's header record.
func (v Version) HeaderSize() int {
	switch {
	case v >= V3:
		return HeaderV3Size
	case v == V2:
		return HeaderV2Size
	}
	return HeaderV1Size
}

// OpSize is the size of one op record.
func (v Version) OpSize() int {
	if v >= V3 {
		return OpV3Size
	}
	return OpV2Size
}
