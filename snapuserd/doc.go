// Package snapuserd is the userspace-snapshot daemon core (spec
// snapuserd.md §4, §8, §9): a Manager that owns one handler per snapshot
// (misc name), opens each handler's block Device (base + COW → target
// bytes, see snapshot.go) and exports it through a Frontend — dm-user
// (kernel/dmuser, the AOSP path) or FUSE (kernel/fuse, a file per snapshot
// that any Linux host can losetup). The Manager implements proto.Daemon, so
// the AOSP control protocol (snapuserd/proto) drives it unchanged.
//
// Ownership: the Manager's mu guards its handler map; each handler's serving
// goroutine is started by StartHandler, cancelled by DeleteHandler or
// Shutdown, and waited for by both.
package snapuserd
