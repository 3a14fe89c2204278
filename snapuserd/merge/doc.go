// Package merge is snapuserd's background merge: it copies the target image
// described by a COW into the base device in place, crash-safely and
// bit-compatibly with AOSP's on-disk merge state, so that a device may reboot
// mid-merge from vabc's daemon into AOSP's snapuserd or back
// (spec snapuserd.md §5, cow-format.md §4.3–§5).
//
// Devices. The merge writes only the base device (base_path_merge, the
// partition itself: the old data in place wherever the COW maps nothing) and
// reads Copy and Xor sources from the source device (backing_device,
// libsnapshot's <part>-src over the old slot's extents; Options.Backing),
// which it never writes. Unmapped blocks and merged blocks are read from the
// base device. Both devices may be views of the same physical blocks (the
// usual Virtual A/B layout), or the source device may be the base device
// itself; the engine assumes the worst: a merge write may destroy a source.
//
// Merge order. The COW reader's final merge order (cow-format.md §4.3) starts
// with the ordered ops (Copy, Xor), which read the old image and must be
// applied in that order, followed by Replace and Zero ops in ascending
// new_block order. num_merge_ops in the COW header counts the ops of that
// order already merged and is the only persistent progress.
//
// Phase 1, ordered ops, window by window (a window is up to 510 ops, the
// capacity of the scratch data area):
//
//	read the window's sources from the source device (runs of consecutive
//	sources coalesced), apply XOR payloads          → window RA_READY
//	(done ahead by the read-ahead goroutine while the previous window is
//	written and synced)
//	if an op of the window writes a block that an op of the window reads:
//	  write ScratchMetadata {new_block, file_offset} at header_size+1 and the
//	  data at header_size+8192+i*4096; sync COW;
//	  read_ahead_state := 2 (Done); sync COW           (durable copy)
//	write runs of contiguous destination blocks to base; sync base
//	num_merge_ops += n, read_ahead_state := 1 in one write of the
//	header page; sync COW                             → window COMPLETED
//
// "sync" is fdatasync on OS files (the merge never changes a file's size or
// allocation, and no reader looks at timestamps), Sync otherwise. A window
// without such an op cannot destroy its own sources, so it skips the scratch
// copy (AOSP always makes it): a crash in it leaves read_ahead_state 0 or 1
// and num_merge_ops at its start, from which AOSP's daemon and this engine
// both re-read it from the intact sources; it is written once, with two
// barriers instead of four.
//
// Recovery (New): if read_ahead_state == 2 the scratch holds a window that was
// made durable but not (fully) committed: its entries must be exactly the next
// ops in merge order from num_merge_ops; the window is replayed from the
// scratch copy (idempotent). With state 0 or 1 the next window is read from
// the source device again: its sources cannot have been overwritten yet.
//
// Phase 2, Replace/Zero ops: runs of contiguous destination blocks of at most
// 256 blocks (1 MiB) are decompressed and written with one write each (and
// their writeback started); after at least 2048 blocks (8 MiB) the base is
// synced and num_merge_ops committed; a final partial commit ends the merge.
// Replays are harmless.
//
// COWs without a scratch region (buffer_size == 0) commit the header with
// one write + fsync and keep the read-ahead buffer in memory only. AOSP then
// has no protection for windows whose writes overwrite their own sources; this
// engine instead ends such a window just before the op whose destination is a
// source of an earlier op of the same window, so that replaying an
// uncommitted window after a crash always reads intact sources. The resulting
// num_merge_ops values are ones AOSP resumes from as well. An Xor op that
// overwrites its own source cannot be replayed at all without the scratch
// copy; New refuses such COWs (ErrUnsafe) unless Options.AllowUnsafeInPlace.
//
// New also checks the merge order itself: data op types, ordered ops first,
// destinations inside the base device, sources inside the source device, and
// no ordered op reading a block an earlier op overwrote (the rule every window
// relies on).
//
// io_uring (Options.IOUring): window writes go out as linked WRITE SQEs with
// a drained FSYNC (queue depth 8), and the read-ahead reads a window's source
// runs as READ SQEs on a ring of its own (up to 8 in flight); any io_uring
// error falls back to synchronous I/O for the rest of the merge, rewriting
// the window or redoing its reads with pread.
//
// API. New(cowFile, base, src, opts) reads the merge state (nothing is
// written); Run(ctx) merges (initiate_merge) until complete, failed or
// cancelled — a cancelled or crashed merge is resumed by a new Engine;
// Pause/Resume park the merge at safe points; Progress/Status/MergeProgress
// report num_merge_ops, merge percent and the getstatus string;
// ReadBlock/ReadAt serve the target image at any time; Limiter bounds
// concurrent merges; Check validates a COW's on-disk merge state; MergeFiles
// is the offline one-call form (cowctl apply --in-place). *cow.Reader is a
// Source. All file I/O goes through internal/faultfs, so tests can fail any
// call and simulate power loss.
//
// Readers. While the merge runs, the daemon's read path asks the engine for
// the current bytes of a target block (ReadBlock). Ordered ops are served per
// window state as in AOSP's MERGE_GROUP_STATE: PENDING → from the sources on
// the source device while holding a per-window reference that the merge thread
// drains before writing; RA_READY and IN_PROGRESS → from the read-ahead
// buffer; COMPLETED → from the base device at the destination; FAILED → an
// I/O error. Replace and Zero blocks are always produced from the COW, other
// blocks from the base device, so a read never sees stale or torn data.
package merge
