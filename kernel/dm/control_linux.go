package dm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ControlPath is the device-mapper control node.
const ControlPath = "/dev/mapper/control"

// MapperDir is where device nodes are created.
const MapperDir = "/dev/mapper"

// Control is an open /dev/mapper/control. Its methods are safe for concurrent use.
type Control struct {
	f    *os.File
	path string
}

// Open opens /dev/mapper/control, creating the node (misc 10:236) first when devtmpfs lacks
// it, which happens before dm-mod is loaded on kernels without devtmpfs hot-plug.
func Open() (*Control, error) {
	return OpenPath(ControlPath)
}

// OpenPath opens a control node at an explicit path.
func OpenPath(path string) (*Control, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) && path == ControlPath {
		if mkErr := mknodControl(path); mkErr == nil {
			f, err = os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
		}
	}
	if err != nil {
		return nil, err
	}
	return &Control{f: f, path: path}, nil
}

func mknodControl(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	// MISC_MAJOR 10, MAPPER_CTRL_MINOR 236.
	return unix.Mknod(path, unix.S_IFCHR|0o600, int(unix.Mkdev(10, 236)))
}

// Close closes the control node.
func (c *Control) Close() error { return c.f.Close() }

// ioctl issues one dm ioctl. It retries with a larger buffer while the kernel reports
// DM_BUFFER_FULL_FLAG (list and status replies can be larger than the first guess).
func (c *Control) ioctl(cmd command, h *header, payload []byte, bufSize int) (header, []byte, error) {
	for {
		buf, err := encodeRequest(h, payload, bufSize)
		if err != nil {
			return header{}, nil, c.pathErr(cmd, h.Name, err)
		}
		var errno syscall.Errno
		rc, err := c.f.SyscallConn()
		if err != nil {
			return header{}, nil, c.pathErr(cmd, h.Name, err)
		}
		err = rc.Control(func(fd uintptr) {
			_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, uintptr(cmd.request()), uintptr(unsafe.Pointer(&buf[0])))
		})
		if err != nil {
			return header{}, nil, c.pathErr(cmd, h.Name, err)
		}
		if errno != 0 {
			err := error(errno)
			if h.Flags != 0 {
				err = fmt.Errorf("flags %#x: %w", h.Flags, errno)
			}
			return header{}, nil, c.pathErr(cmd, h.Name, err)
		}
		out, data, err := decodeHeader(buf)
		if err != nil {
			return header{}, nil, c.pathErr(cmd, h.Name, err)
		}
		if out.Flags&FlagBufferFull != 0 {
			if len(buf) >= 64<<20 {
				return header{}, nil, c.pathErr(cmd, h.Name, errors.New("reply does not fit in 64 MiB"))
			}
			bufSize = 4 * len(buf)
			continue
		}
		return out, data, nil
	}
}

func (c *Control) pathErr(cmd command, name string, err error) error {
	if name != "" {
		err = fmt.Errorf("device %q: %w", name, err)
	}
	return &os.PathError{Op: cmd.String(), Path: c.path, Err: err}
}

// Version returns the kernel's dm ioctl interface version (e.g. 4.47.0 on 6.1).
func (c *Control) Version() ([3]uint32, error) {
	h, _, err := c.ioctl(cmdVersion, &header{}, nil, 0)
	return h.Version, err
}

// Targets lists the registered target types with their versions (dmsetup targets).
func (c *Control) Targets() ([]TargetVersion, error) {
	h, data, err := c.ioctl(cmdListVersions, &header{}, nil, 16<<10)
	if err != nil {
		return nil, err
	}
	vs, err := decodeVersions(data)
	if err != nil {
		return nil, c.pathErr(cmdListVersions, h.Name, err)
	}
	return vs, nil
}

// ListDevices lists the mapped devices (dmsetup ls).
func (c *Control) ListDevices() ([]NameListEntry, error) {
	_, data, err := c.ioctl(cmdListDevices, &header{}, nil, 16<<10)
	if err != nil {
		return nil, err
	}
	l, err := decodeNameList(data)
	if err != nil {
		return nil, c.pathErr(cmdListDevices, "", err)
	}
	return l, nil
}

// Info describes one mapped device.
type Info struct {
	Name        string
	UUID        string
	Dev         uint64 // use unix.Major / unix.Minor
	OpenCount   int32
	EventNr     uint32
	TargetCount uint32
	Flags       uint32 // Flag* bits: FlagSuspend, FlagActivePresent, FlagInactivePresent, FlagReadOnly
}

// Suspended reports whether the device is suspended.
func (i Info) Suspended() bool { return i.Flags&FlagSuspend != 0 }

func infoOf(h header) Info {
	return Info{Name: h.Name, UUID: h.UUID, Dev: h.Dev, OpenCount: h.OpenCount,
		EventNr: h.EventNr, TargetCount: h.TargetCount, Flags: h.Flags}
}

// Create creates an empty mapped device (no table yet).
func (c *Control) Create(name, uuid string) (Info, error) {
	h, _, err := c.ioctl(cmdDevCreate, &header{Name: name, UUID: uuid}, nil, 0)
	return infoOf(h), err
}

// LoadOptions modify Load.
type LoadOptions struct {
	ReadOnly bool
}

// Load loads targets as the device's inactive table; Resume makes it live.
func (c *Control) Load(name string, targets []Target, opts *LoadOptions) error {
	payload, err := encodeTargets(targets)
	if err != nil {
		return c.pathErr(cmdTableLoad, name, err)
	}
	h := &header{Name: name, TargetCount: uint32(len(targets))}
	if opts != nil && opts.ReadOnly {
		h.Flags |= FlagReadOnly
	}
	_, _, err = c.ioctl(cmdTableLoad, h, payload, 0)
	return err
}

// ClearInactive drops a loaded but not yet resumed table.
func (c *Control) ClearInactive(name string) error {
	_, _, err := c.ioctl(cmdTableClear, &header{Name: name}, nil, 0)
	return err
}

// Suspend suspends the device. noFlush keeps queued I/O instead of flushing it (needed to
// swap tables under a stuck target).
func (c *Control) Suspend(name string, noFlush bool) error {
	h := &header{Name: name, Flags: FlagSuspend}
	if noFlush {
		h.Flags |= FlagNoFlush
	}
	_, _, err := c.ioctl(cmdDevSuspend, h, nil, 0)
	return err
}

// Resume resumes the device, swapping in the inactive table if one is loaded.
func (c *Control) Resume(name string) (Info, error) {
	h, _, err := c.ioctl(cmdDevSuspend, &header{Name: name}, nil, 0)
	return infoOf(h), err
}

// Remove removes the device and its /dev/mapper node. With deferred, a device that is still
// open is removed when its last user closes it.
func (c *Control) Remove(name string, deferred bool) error {
	h := &header{Name: name}
	if deferred {
		h.Flags |= FlagDeferredRemove
	}
	_, _, err := c.ioctl(cmdDevRemove, h, nil, 0)
	if err == nil {
		removeNode(name)
	}
	return err
}

// Info returns the device's state (DM_DEV_STATUS).
func (c *Control) Info(name string) (Info, error) {
	h, _, err := c.ioctl(cmdDevStatus, &header{Name: name}, nil, 0)
	return infoOf(h), err
}

// Status returns each target's status line (dmsetup status) in Target.Params.
func (c *Control) Status(name string) ([]Target, error) {
	return c.tableStatus(name, FlagNoFlush)
}

// Table returns the live table (dmsetup table).
func (c *Control) Table(name string) ([]Target, error) {
	return c.tableStatus(name, FlagStatusTable)
}

// InactiveTable returns the loaded, not yet resumed table.
func (c *Control) InactiveTable(name string) ([]Target, error) {
	return c.tableStatus(name, FlagStatusTable|FlagQueryInactiveTable)
}

func (c *Control) tableStatus(name string, flags uint32) ([]Target, error) {
	h, data, err := c.ioctl(cmdTableStatus, &header{Name: name, Flags: flags}, nil, 16<<10)
	if err != nil {
		return nil, err
	}
	ts, err := decodeTargets(data, h.TargetCount)
	if err != nil {
		return nil, c.pathErr(cmdTableStatus, name, err)
	}
	return ts, nil
}

// Wait blocks until the device's event counter differs from eventNr, then returns the new
// state and status lines (DM_DEV_WAIT; used to follow snapshot-merge progress). The ioctl
// cannot be interrupted: call it from a goroutine that may outlive its caller's interest,
// or poll Status instead.
func (c *Control) Wait(name string, eventNr uint32) (Info, []Target, error) {
	h, data, err := c.ioctl(cmdDevWait, &header{Name: name, EventNr: eventNr, Flags: FlagNoFlush}, nil, 16<<10)
	if err != nil {
		return Info{}, nil, err
	}
	ts, err := decodeTargets(data, h.TargetCount)
	if err != nil {
		return Info{}, nil, c.pathErr(cmdDevWait, name, err)
	}
	return infoOf(h), ts, nil
}

// CreateOptions modify CreateDevice.
type CreateOptions struct {
	UUID     string
	ReadOnly bool
}

// CreateDevice creates, loads and resumes a device and makes /dev/mapper/<name>. It returns
// the node path. On failure it removes what it created.
func (c *Control) CreateDevice(name string, targets []Target, opts *CreateOptions) (string, error) {
	if opts == nil {
		opts = &CreateOptions{}
	}
	if _, err := c.Create(name, opts.UUID); err != nil {
		return "", err
	}
	if err := c.Load(name, targets, &LoadOptions{ReadOnly: opts.ReadOnly}); err != nil {
		c.Remove(name, false)
		return "", err
	}
	info, err := c.Resume(name)
	if err != nil {
		c.Remove(name, false)
		return "", err
	}
	path, err := MakeNode(name, info.Dev)
	if err != nil {
		c.Remove(name, false)
		return "", err
	}
	return path, nil
}

// Reload loads a new table and swaps it in: suspend, load, resume. This is how a snapshot
// table becomes snapshot-merge.
func (c *Control) Reload(name string, targets []Target) error {
	return c.ReloadWith(name, targets, nil)
}

// ReloadWith is Reload with load options: a read-only device needs ReadOnly on every
// load, or the new table makes it writable.
func (c *Control) ReloadWith(name string, targets []Target, opts *LoadOptions) error {
	if err := c.Load(name, targets, opts); err != nil {
		return err
	}
	if err := c.Suspend(name, false); err != nil {
		c.ClearInactive(name)
		return err
	}
	_, err := c.Resume(name)
	return err
}

// MakeNode creates (or repairs) /dev/mapper/<name> as the block device dev. Without udev
// nothing else does; a stale regular file at that path (see vm-harness.md §12 trap 1) is
// replaced.
func MakeNode(name string, dev uint64) (string, error) {
	path := filepath.Join(MapperDir, name)
	if name == "" || name == "." || name == ".." || filepath.Base(path) != name {
		return "", &os.PathError{Op: "mknod", Path: path, Err: errors.New("invalid device name")}
	}
	if err := os.MkdirAll(MapperDir, 0o755); err != nil {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err == nil {
		if st.Mode&unix.S_IFMT == unix.S_IFBLK && st.Rdev == dev {
			return path, nil
		}
		os.Remove(path)
	}
	if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(dev)); err != nil {
		return "", &os.PathError{Op: "mknod", Path: path,
			Err: fmt.Errorf("block %d:%d: %w", unix.Major(dev), unix.Minor(dev), err)}
	}
	return path, nil
}

func removeNode(name string) {
	path := filepath.Join(MapperDir, name)
	if filepath.Base(path) == name {
		os.Remove(path)
	}
}
