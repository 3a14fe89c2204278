// Package fuse exports block devices as read-only regular files through
// FUSE (github.com/hanwen/go-fuse/v2), so that any Linux host can read a
// snapshot, attach it with losetup and mount it without device-mapper or the
// dm-user module. Each device is served through the same dmuser.Handler
// interface that the dm-user frontend uses; reads at byte granularity are
// turned into sector reads of the covering range.
package fuse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/kernel/dmuser"
)

// maxRequest is the largest READ the kernel sends.
const maxRequest = 1 << 20

// Options configures Mount.
type Options struct {
	// FsName is shown in /proc/mounts (default "vabc-snapuserd").
	FsName string
	// AllowOther lets users other than the mounter read the files.
	AllowOther bool
	// Debug logs every FUSE request.
	Debug  bool
	Logger *slog.Logger
	// ReadAheadKB is the kernel read-ahead of the mount's backing device
	// (/sys/class/bdi/<dev>/read_ahead_kb). The kernel starts a FUSE
	// mount at 128 KiB and the INIT reply can only lower it; root can raise
	// it through sysfs, so that sequential reads arrive as requests of up
	// to 1 MiB. 0 means 1024 (one 1 MiB request); negative leaves the
	// kernel's value. A failure to set it is logged, not fatal: see
	// Export.ReadAheadKB for what is in force.
	ReadAheadKB int
}

// Export is a mounted directory of device files.
type Export struct {
	dir    string
	server *fuse.Server
	root   *rootNode
	log    *slog.Logger

	mu    sync.Mutex // guards files
	files map[string]*fs.Inode
}

type rootNode struct{ fs.Inode }

// Mount mounts an empty read-only directory at dir. It uses mount(2)
// directly when running as root and falls back to fusermount3 otherwise.
func Mount(dir string, opts *Options) (*Export, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.FsName == "" {
		o.FsName = "vabc-snapuserd"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, fmt.Errorf("fuse: /dev/fuse unavailable: %w", err)
	}
	e := &Export{dir: dir, root: &rootNode{}, log: o.Logger, files: map[string]*fs.Inode{}}
	mo := fuse.MountOptions{
		FsName:     o.FsName,
		Name:       "vabc",
		AllowOther: o.AllowOther,
		Debug:      o.Debug,
		Options:    []string{"ro", "default_permissions"},
		// 1 MiB requests (max_read and max_pages, Linux >= 4.20; older
		// kernels cap at 128 KiB): a reader with large buffers costs one
		// round trip per MiB. The kernel starts a FUSE mount's read-ahead
		// at 128 KiB and max_readahead can only lower it; Options.ReadAheadKB
		// raises it through sysfs after the mount.
		MaxWrite:     maxRequest,
		MaxReadAhead: maxRequest,
		// Replies are Go buffers: go-fuse's splice path would copy them
		// into a pipe first, and for a 1 MiB reply plus header it fails
		// against the default pipe-max-size of 1 MiB, logging every time.
		DisableSplice: true,
		// No FUSE_AUTO_INVAL_DATA: with it the kernel revalidates the
		// attributes (a GETATTR round trip) on reads once AttrTimeout has
		// passed and drops the page cache if they look changed. An
		// exported device never changes while exported and Remove
		// invalidates explicitly (NotifyContent), so the cache is only
		// dropped by us.
		ExplicitDataCacheControl: true,
	}
	if os.Geteuid() == 0 {
		mo.DirectMount = true
	}
	sec := time.Second
	server, err := fs.Mount(dir, e.root, &fs.Options{
		MountOptions: mo,
		EntryTimeout: &sec,
		AttrTimeout:  &sec,
	})
	if err != nil {
		return nil, fmt.Errorf("fuse: mount %s: %w", dir, err)
	}
	e.server = server
	if o.ReadAheadKB == 0 {
		o.ReadAheadKB = maxRequest >> 10
	}
	if o.ReadAheadKB > 0 {
		if err := e.setReadAhead(o.ReadAheadKB); err != nil {
			e.log.Warn("fuse: kernel read-ahead left unchanged", "dir", dir, "want_kb", o.ReadAheadKB, "err", err)
		}
	}
	return e, nil
}

// bdiFile is the sysfs file of the mount's backing device read-ahead.
func (e *Export) bdiFile() (string, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(e.dir, &st); err != nil {
		return "", err
	}
	return fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev)), nil
}

func (e *Export) setReadAhead(kb int) error {
	p, err := e.bdiFile()
	if err != nil {
		return err
	}
	if err := os.WriteFile(p, []byte(strconv.Itoa(kb)), 0); err != nil {
		return err
	}
	if got := e.ReadAheadKB(); got != kb {
		return fmt.Errorf("%s reads %d after writing %d", p, got, kb)
	}
	return nil
}

// ReadAheadKB returns the kernel read-ahead of the mount in KiB, or -1 if
// it cannot be read.
func (e *Export) ReadAheadKB() int {
	p, err := e.bdiFile()
	if err != nil {
		return -1
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

// Dir returns the mount point.
func (e *Export) Dir() string { return e.dir }

// Add exposes h (size bytes) as the file <dir>/<name>.
func (e *Export) Add(name string, h dmuser.Handler, size int64) error {
	if name == "" || name == "." || name == ".." || containsSlash(name) {
		return fmt.Errorf("fuse: invalid file name %q", name)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.files[name]; ok {
		return fmt.Errorf("fuse: %s/%s already exported", e.dir, name)
	}
	node := &fileNode{h: h, size: size, log: e.log}
	ch := e.root.NewPersistentInode(context.Background(), node, fs.StableAttr{Mode: syscall.S_IFREG})
	e.root.AddChild(name, ch, false)
	e.files[name] = ch
	// Drop a negative dentry the kernel may hold from an earlier lookup.
	_ = e.root.NotifyEntry(name)
	return nil
}

// Remove withdraws <dir>/<name>.
func (e *Export) Remove(name string) error {
	e.mu.Lock()
	ch, ok := e.files[name]
	delete(e.files, name)
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("fuse: %s/%s not exported", e.dir, name)
	}
	// Drop the file's page cache (KEEP_CACHE keeps it across opens), so
	// that a descriptor still open on the withdrawn file cannot be served
	// old data from it once the device behind it is gone.
	_ = ch.NotifyContent(0, 0)
	e.root.RmChild(name)
	if errno := e.root.NotifyDelete(name, ch); errno != 0 && errno != syscall.ENOENT {
		_ = e.root.NotifyEntry(name)
	}
	return nil
}

// Unmount unmounts the directory and waits for the server loop.
func (e *Export) Unmount() error {
	err := e.server.Unmount()
	e.server.Wait()
	return err
}

func containsSlash(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' || s[i] == 0 {
			return true
		}
	}
	return false
}

// fileNode is one exported device.
type fileNode struct {
	fs.Inode
	h    dmuser.Handler
	size int64
	log  *slog.Logger
}

var (
	_ fs.NodeGetattrer = (*fileNode)(nil)
	_ fs.NodeOpener    = (*fileNode)(nil)
	_ fs.NodeReader    = (*fileNode)(nil)
)

func (f *fileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o444
	out.Size = uint64(f.size)
	out.Blocks = uint64(f.size+511) / 512
	out.Blksize = 4096
	out.Nlink = 1
	return 0
}

func (f *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EROFS
	}
	// KEEP_CACHE: the kernel keeps the file's page cache across opens and
	// serves repeated reads from it. Safe because an exported device's
	// contents never change while it is exported (read-only; a snapshot
	// reads the same target image before, during and after its merge), and
	// a re-export under the same name is a new inode; Remove invalidates.
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

// Read serves [off, off+len(dest)) through whole-sector reads.
func (f *fileNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= f.size || len(dest) == 0 {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), f.size)
	start := off &^ 511
	alignedEnd := (end + 511) &^ 511
	var buf []byte
	if start == off && alignedEnd == end {
		buf = dest[:end-off]
	} else {
		buf = make([]byte, alignedEnd-start)
	}
	if err := f.h.ReadSectors(buf, uint64(start/512)); err != nil {
		f.log.Error("fuse read failed", "off", off, "len", len(dest), "err", err)
		if errors.Is(err, dmuser.ErrUnsupported) {
			return nil, syscall.EOPNOTSUPP
		}
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(buf[off-start : end-start]), 0
}
