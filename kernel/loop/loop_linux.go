// Package loop attaches regular files to loop block devices through /dev/loop-control and
// LOOP_CONFIGURE (Linux 5.8+), falling back to LOOP_SET_FD + LOOP_SET_STATUS64 on older
// kernels. Pure Go, x/sys/unix only.
package loop

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ControlPath is the loop control node.
const ControlPath = "/dev/loop-control"

// Options modify Attach.
type Options struct {
	ReadOnly  bool   // LO_FLAGS_READ_ONLY; the file is opened O_RDONLY
	DirectIO  bool   // LO_FLAGS_DIRECT_IO: bypass the backing file's page cache
	AutoClear bool   // LO_FLAGS_AUTOCLEAR: detach when the last opener closes
	BlockSize uint32 // logical block size; 0 keeps 512
	Offset    uint64 // byte offset into the backing file
	SizeLimit uint64 // bytes; 0 = to the end of the file
}

// Device is an attached loop device.
type Device struct {
	Path   string // /dev/loopN
	Number int
}

func pathErr(op, path string, err error) error {
	return &os.PathError{Op: op, Path: path, Err: err}
}

// Attach attaches file to a free loop device and returns it.
func Attach(file string, opts *Options) (*Device, error) {
	if opts == nil {
		opts = &Options{}
	}
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	backing, err := os.OpenFile(file, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer backing.Close()

	ctl, err := os.OpenFile(ControlPath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer ctl.Close()

	// Another process can take the device between GET_FREE and CONFIGURE (EBUSY): retry.
	var lastErr error
	for attempt := 0; attempt < 16; attempt++ {
		// LOOP_CTL_GET_FREE returns the device number as the ioctl's result, not through a
		// pointer argument.
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, pathErr("LOOP_CTL_GET_FREE", ControlPath, err)
		}
		dev, err := configure(n, backing, file, opts)
		if errors.Is(err, unix.EBUSY) {
			lastErr = err
			time.Sleep(time.Millisecond)
			continue
		}
		return dev, err
	}
	return nil, lastErr
}

func devPath(n int) string { return fmt.Sprintf("/dev/loop%d", n) }

// openDev opens /dev/loopN, creating the node (block 7:N) if devtmpfs has not yet.
func openDev(n int, flag int) (*os.File, error) {
	path := devPath(n)
	f, err := os.OpenFile(path, flag|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		if mkErr := unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(7, uint32(n)))); mkErr != nil && !errors.Is(mkErr, os.ErrExist) {
			return nil, pathErr("mknod", path, mkErr)
		}
		f, err = os.OpenFile(path, flag|unix.O_CLOEXEC, 0)
	}
	return f, err
}

func configure(n int, backing *os.File, file string, opts *Options) (*Device, error) {
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := openDev(n, flag)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	path := devPath(n)

	var info unix.LoopInfo64
	info.Offset = opts.Offset
	info.Sizelimit = opts.SizeLimit
	if opts.ReadOnly {
		info.Flags |= unix.LO_FLAGS_READ_ONLY
	}
	if opts.AutoClear {
		info.Flags |= unix.LO_FLAGS_AUTOCLEAR
	}
	if opts.DirectIO {
		info.Flags |= unix.LO_FLAGS_DIRECT_IO
	}
	name := file
	if abs, err := filepath.Abs(file); err == nil {
		name = abs
	}
	copy(info.File_name[:len(info.File_name)-1], name)

	cfg := unix.LoopConfig{Fd: uint32(backing.Fd()), Size: opts.BlockSize, Info: info}
	err = unix.IoctlLoopConfigure(int(f.Fd()), &cfg)
	switch {
	case err == nil:
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY):
		// Kernels before 5.8 have no LOOP_CONFIGURE.
		if err := legacyConfigure(f, backing, &info, opts); err != nil {
			return nil, err
		}
	default:
		return nil, pathErr("LOOP_CONFIGURE", path, fmt.Errorf("backing %s: %w", file, err))
	}
	return &Device{Path: path, Number: n}, nil
}

func legacyConfigure(f, backing *os.File, info *unix.LoopInfo64, opts *Options) error {
	path := f.Name()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_SET_FD, int(backing.Fd())); err != nil {
		return pathErr("LOOP_SET_FD", path, err)
	}
	dio := info.Flags&unix.LO_FLAGS_DIRECT_IO != 0
	info.Flags &^= unix.LO_FLAGS_DIRECT_IO
	if err := unix.IoctlLoopSetStatus64(int(f.Fd()), info); err != nil {
		unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
		return pathErr("LOOP_SET_STATUS64", path, err)
	}
	if opts.BlockSize != 0 {
		if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_SET_BLOCK_SIZE, int(opts.BlockSize)); err != nil {
			unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
			return pathErr("LOOP_SET_BLOCK_SIZE", path, err)
		}
	}
	if dio {
		if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_SET_DIRECT_IO, 1); err != nil {
			unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
			return pathErr("LOOP_SET_DIRECT_IO", path, err)
		}
	}
	return nil
}

// Detach detaches the loop device at path (e.g. /dev/loop0).
func Detach(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0); err != nil {
		return pathErr("LOOP_CLR_FD", path, err)
	}
	return nil
}

// Status is what the kernel reports about an attached loop device.
type Status struct {
	BackingFile string
	Offset      uint64
	SizeLimit   uint64
	ReadOnly    bool
	DirectIO    bool
	AutoClear   bool
}

// GetStatus returns the state of the loop device at path (LOOP_GET_STATUS64). An unattached
// device fails with ENXIO.
func GetStatus(path string) (Status, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Status{}, err
	}
	defer f.Close()
	info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	if err != nil {
		return Status{}, pathErr("LOOP_GET_STATUS64", path, err)
	}
	name := string(info.File_name[:])
	if i := strings.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	return Status{
		BackingFile: name,
		Offset:      info.Offset,
		SizeLimit:   info.Sizelimit,
		ReadOnly:    info.Flags&unix.LO_FLAGS_READ_ONLY != 0,
		DirectIO:    info.Flags&unix.LO_FLAGS_DIRECT_IO != 0,
		AutoClear:   info.Flags&unix.LO_FLAGS_AUTOCLEAR != 0,
	}, nil
}
