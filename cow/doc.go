// Package cow reads and writes Android Virtual A/B copy-on-write (COW) images
// byte-for-byte compatibly with AOSP libsnapshot_cow (versions 1, 2 and 3).
//
// The authoritative description of every offset and quirk is
// shared/spec/cow-format.md; section numbers below refer to it.
//
// v1/v2 layout (§2.6):
//
//	<start_of_file>
//	[header 34 B (v1) or 38 B (v2)]
//	[scratch region, buffer_size bytes (v2 only, 0 or 2 MiB)]
//	[cluster 0: N op slots of 20 B][payloads of cluster 0's data ops]
//	[cluster 1: ...]
//	[footer 84 B in the next free op slot]
//	<end_of_file>
//
// v3 layout (§3.3):
//
//	[header 78 B][scratch][sequence u32 × sequence_data_count]
//	[resume points 16 B × resume_point_max][op region 16 B × op_count_max]
//	[data region: payloads in op order]
//
// Records are decoded explicitly, field by field, little-endian; no unsafe
// casts. Every length read from disk is bounded by the file size before any
// allocation happens. All corruption errors satisfy errors.Is(err, ErrCorrupt).
package cow
