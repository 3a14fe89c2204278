package merge

import (
	"os"

	"github.com/vabc-go/vabc/internal/faultfs"
	"golang.org/x/sys/unix"
)

// syncData makes the completed writes of f durable. For an OS file it is
// fdatasync(2), not fsync(2): the merge only overwrites bytes inside the COW
// and the base device (a block device, or a file of fixed size), so the
// only metadata fsync would add is the inode's timestamps, which no reader of
// the merge state looks at; fdatasync still flushes every piece of metadata
// needed to read the data back (block allocation of a sparse or preallocated
// file, size), and on a block device the two are the same call. Other Files
// (the in-memory power-loss model, fault-injection wrappers) use Sync, which
// is what the crash tests cut.
func syncData(f faultfs.File) error {
	of, ok := f.(*faultfs.OSFile)
	if !ok {
		return f.Sync()
	}
	rc, err := of.OS().SyscallConn()
	if err != nil {
		return f.Sync()
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}

// startWriteback asks the kernel to start writing back [off, off+n) of an OS
// file now (sync_file_range SYNC_FILE_RANGE_WRITE), so that the device works
// while the merge decodes the next run and the barrier that follows
// (syncData) has less left to wait for. It is only a hint: it guarantees
// nothing about durability (no metadata, no device cache flush), so it never
// replaces a syncData, and its errors are left to that syncData to report.
func startWriteback(f faultfs.File, off, n int64) {
	of, ok := f.(*faultfs.OSFile)
	if !ok || n <= 0 {
		return
	}
	rc, err := of.OS().SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
	})
}
