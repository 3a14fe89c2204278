// Package legacy is snapuserd's Android 12 mode (snapuserd.md §1 "Mode A",
// §3): the COW served as a dm-snapshot persistent exception store. The
// daemon's dm-user device is the COW device of a kernel `snapshot <base>
// <dm-user> P 8` target (later `snapshot-merge`), so the kernel, not the
// daemon, merges the update into the base device.
//
// Layout of the synthesized store (Linux dm-snap-persistent.c; chunk = 8
// sectors = 4 KiB, all fields little-endian):
//
//	chunk 0            disk_header {magic "SnAp" 0x70416e53, valid 1, version 1, chunk_size 8}
//	chunk 1            metadata area 0: 256 × disk_exception {old_chunk u64, new_chunk u64}
//	chunks 2–257       data chunks
//	chunk 258          metadata area 1, ... (stride 257: chunk c is an area iff c mod 257 == 1)
//
// An exception maps an origin chunk (the op's new_block) to the data chunk
// that holds its target bytes; a zero new_chunk ends the list. The store
// is synthesized from the COW's legacy merge order (cow.ReaderOptions.Legacy:
// Replace/Zero ops sorted descending) from num_merge_ops on, exactly as
// AOSP's Snapuserd::ReadMetadata places it (Layout: reverse merge order,
// deliberate chunk-id gaps between batches of ordered ops and read-ahead
// windows). init returns its size (`success,<num_sectors>`).
//
// The kernel merges from the last exception backwards, copying runs of
// consecutive chunks to the origin, flushing it, then zeroing those
// exceptions and writing the area back (PREFLUSH|FUA). Device.WriteSectors
// validates each such write (Layout.Interpret), commits num_merge_ops
// through the merge engine's kernel-driven mode (merge.Engine.KernelMerged:
// per read-ahead window for Copy/Xor ops, per write otherwise, as AOSP's
// Android 12 daemon), and only then updates its areas. Writes that are not
// a merge step are refused (ErrBadMetadataWrite) and commit nothing.
//
// Restarts: a store synthesized from a later num_merge_ops is a prefix of
// the earlier one (same exceptions and chunk ids), so a daemon restarted in
// the middle of a kernel merge serves the kernel's view unchanged; the
// read-ahead window being merged is replayed from the scratch region.
//
// Not AOSP: COWs with multi-block Replace ops (v3 compression factor, which
// Android 12 never produced) are served with one exception per block; an
// op counts as merged with its first block.
package legacy
