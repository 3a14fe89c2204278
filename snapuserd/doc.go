// Package snapuserd is the userspace-snapshot daemon core (spec
// snapuserd.md §4, §8, §9): a Manager that owns one handler per snapshot
// (misc name), opens each handler's block Device (base + COW → target
// bytes, see snapshot.go) and exports it through a Frontend — dm-user
// (kernel/dmuser, the AOSP path) or FUSE (kernel/fuse, a file per snapshot
// that any Linux host can losetup). The Manager implements proto.Daemon, so
// the AOSP control protocol (snapuserd/proto) drives it unchanged.
//
// Merging (merging.go, §5, §7, §8): initiate_merge builds the partition's
// merge.Engine from the COW's on-disk merge state and switches the
// handler's reads over to it (the switch waits for reads in flight on the
// handler's own path), so that blocks of the window being merged come from
// the read-ahead buffer and merged blocks from the base device. The merge
// runs on its own locked OS thread at background priority (nice, idle I/O
// class), at most MergeConfig.Threads partitions at once. A restarted daemon
// serves a partially merged COW from the header (num_merge_ops) and the
// scratch region until initiate_merge arrives again.
//
// Devices: Copy/Xor sources come from the source device (init's
// backing_device, libsnapshot's <part>-src), which is never written;
// unmapped and merged blocks come from the base device (base_path_merge),
// the only device the merge writes.
//
// Verification (verify.go, §8): one background read of each handler's
// device, started at handler start by the second-stage daemon or by the
// first update-verify, which waits for it at most Config.VerifyTimeout.
//
// Trust (peer_linux.go, proto/peer.go): misc names must be plain names; a
// non-root client's init paths are opened with that client's credentials
// and the handler is pinned to the files so opened.
//
// Ownership: the Manager's mu guards its handler map; each handler's serving
// goroutine is started by StartHandler, cancelled by DeleteHandler or
// Shutdown, and waited for by both. A merge goroutine is started by
// InitiateMerge and cancelled and waited for by DeleteHandler, Detach and
// Shutdown (before the handler's device is closed).
package snapuserd
