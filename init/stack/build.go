package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/kernel/dm"
	"github.com/vabc-go/vabc/kernel/loop"
	"github.com/vabc-go/vabc/snapuserd"
)

// Device node directories. AOSP passes /dev/block/dm-N to snapuserd and
// mounts /dev/block/mapper/<P>; on a Linux host devtmpfs makes /dev/dm-N and
// kernel/dm makes /dev/mapper/<P>, so the AOSP paths are symlinks to those.
var (
	BlockDir       = "/dev/block"
	BlockMapperDir = "/dev/block/mapper"
	DmUserDir      = "/dev/dm-user"
)

// Builder creates and removes the stacks.
type Builder struct {
	C   *dm.Control
	Log *slog.Logger
	// Timeout bounds waits for device nodes; 0 is AOSP's 10 s.
	Timeout time.Duration
	// Hybrid builds snapshot devices with the hybrid table (hybrid.go) instead of
	// AOSP's single dm-user target; off by default.
	Hybrid bool
}

func (b *Builder) timeout() time.Duration {
	if b.Timeout > 0 {
		return b.Timeout
	}
	return 10 * time.Second
}

func (b *Builder) logf(msg string, args ...any) {
	if b.Log != nil {
		b.Log.Info(msg, args...)
	}
}

// DevPath returns /dev/block/dm-N of a dm device, creating the symlinks
// /dev/block/dm-N → /dev/dm-N and /dev/block/mapper/<name> → /dev/mapper/<name>.
func (b *Builder) DevPath(name string) (string, error) {
	info, err := b.C.Info(name)
	if err != nil {
		return "", err
	}
	mapper, err := dm.MakeNode(name, info.Dev)
	if err != nil {
		return "", err
	}
	p := filepath.Join(BlockDir, fmt.Sprintf("dm-%d", unix.Minor(info.Dev)))
	if err := os.MkdirAll(BlockMapperDir, 0o755); err != nil {
		return "", err
	}
	target := fmt.Sprintf("/dev/dm-%d", unix.Minor(info.Dev))
	if _, err := os.Stat(target); err != nil {
		// No devtmpfs: point at the /dev/mapper node instead.
		target = mapper
	}
	if err := relink(target, p); err != nil {
		return "", err
	}
	if err := relink(mapper, filepath.Join(BlockMapperDir, name)); err != nil {
		return "", err
	}
	return p, nil
}

func relink(target, link string) error {
	if cur, err := os.Readlink(link); err == nil && cur == target {
		return nil
	}
	os.Remove(link)
	return os.Symlink(target, link)
}

// MapperPath is /dev/block/mapper/<name>.
func MapperPath(name string) string { return filepath.Join(BlockMapperDir, name) }

// create makes a device and returns its /dev/block/dm-N path.
func (b *Builder) create(name string, ts []dm.Target, ro bool) (string, error) {
	if _, err := b.C.CreateDevice(name, ts, &dm.CreateOptions{ReadOnly: ro}); err != nil {
		return "", fmt.Errorf("create %s: %w", name, err)
	}
	return b.DevPath(name)
}

// MapPlain creates P as the ordinary dm-linear partition (read-only).
func (b *Builder) MapPlain(name string, p Partition, sectors uint64) (string, error) {
	ts, err := LinearTargets(p, sectors)
	if err != nil {
		return "", err
	}
	return b.create(name, ts, true)
}

// Mapped is a snapshot stack built by MapSnapshot.
type Mapped struct {
	Snapshot
	Dev, Base, Src, Cow string // /dev/block/dm-N paths; Src == Base without <P>-src
	Loop                string // loop device under <P>-cow-img
}

// InitArgs is the snapuserd argument misc,cow,source,base.
func (m *Mapped) InitArgs() string { return strings.Join([]string{m.Misc, m.Cow, m.Src, m.Base}, ",") }

// MapSnapshot builds <P>-base, <P>-cow-img (over a loop device of the COW
// image), <P>-src and the dm-user device <P> in that order (§4.3 steps
// 4–7, without the daemon messages), undoing everything on failure.
func (b *Builder) MapSnapshot(ctx context.Context, s Snapshot) (m *Mapped, err error) {
	m = &Mapped{Snapshot: s}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
			m = nil
		}
	}()
	rm := func(n string) func() { return func() { b.C.Remove(n, false) } }
	if m.Base, err = b.create(BaseName(s.Name), s.Base, false); err != nil {
		return nil, err
	}
	undo = append(undo, rm(BaseName(s.Name)))

	fi, err := os.Stat(s.CowImage)
	if err != nil {
		return nil, fmt.Errorf("COW image of %s: %w", s.Name, err)
	}
	if uint64(fi.Size()) < s.CowImageSectors*512 {
		return nil, fmt.Errorf("COW image %s has %d bytes, cow_file_size is %d", s.CowImage, fi.Size(), s.CowImageSectors*512)
	}
	ld, err := loop.Attach(s.CowImage, nil)
	if err != nil {
		return nil, fmt.Errorf("loop for %s: %w", s.CowImage, err)
	}
	m.Loop = ld.Path
	undo = append(undo, func() { loop.Detach(ld.Path) })
	if m.Cow, err = b.create(CowImageName(s.Name), []dm.Target{dm.Linear(0, s.CowImageSectors, ld.Path, 0)}, false); err != nil {
		return nil, err
	}
	undo = append(undo, rm(CowImageName(s.Name)))

	m.Src = m.Base
	if s.Src != nil {
		if m.Src, err = b.create(SrcName(s.Name), s.Src, true); err != nil {
			return nil, err
		}
		undo = append(undo, rm(SrcName(s.Name)))
	}
	ts, ro := []dm.Target{dm.User(0, s.Sectors, s.Misc)}, false
	if b.Hybrid {
		// Idle plan: no merge writes the base until PrepareMerge reloads the table.
		if ts, err = hybridPlan(m.Cow, m.Base, m.Src, s.Misc, s.Sectors, snapuserd.HybridIdle); err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", s.Name, err)
		}
		ro = true
		b.logf("hybrid table", "partition", s.Name, "phase", snapuserd.HybridIdle.String(), "targets", len(ts))
	}
	if m.Dev, err = b.create(s.Name, ts, ro); err != nil {
		return nil, err
	}
	undo = append(undo, rm(s.Name))
	if err := WaitPath(ctx, filepath.Join(DmUserDir, s.Misc), b.timeout()); err != nil {
		return nil, err
	}
	b.logf("snapshot stack mapped", "partition", s.Name, "dev", m.Dev, "base", m.Base, "src", m.Src, "cow", m.Cow, "misc", s.Misc)
	return m, nil
}

// Retarget reloads the dm-user table of name with a new misc name (same
// length) and waits for its control node (§4.7 step 2).
// A hybrid table keeps its segments: only the dm-user ones move to the new misc name.
func (b *Builder) Retarget(ctx context.Context, name string, sectors uint64, misc string) error {
	ts, opts := []dm.Target{dm.User(0, sectors, misc)}, (*dm.LoadOptions)(nil)
	if cur, err := b.C.Table(name); err == nil && IsHybrid(cur) {
		ts, opts = withMisc(cur, misc), readOnly
	}
	if err := b.C.ReloadWith(name, ts, opts); err != nil {
		return fmt.Errorf("reload %s to misc %s: %w", name, misc, err)
	}
	return WaitPath(ctx, filepath.Join(DmUserDir, misc), b.timeout())
}

// errNoDM: a Builder without device-mapper (host tools, tests) has no devices.
var errNoDM = errors.New("stack: no device-mapper control")

// Exists reports whether the dm device name exists.
func (b *Builder) Exists(name string) error {
	if b.C == nil {
		return errNoDM
	}
	_, err := b.C.Info(name)
	return err
}

// IsUser reports whether name's live table is one dm-user target or a hybrid table
// (hybrid.go): the partition is still served by the daemon.
func (b *Builder) IsUser(name string) (bool, error) {
	if b.C == nil {
		return false, errNoDM
	}
	ts, err := b.C.Table(name)
	if err != nil {
		return false, err
	}
	return (len(ts) == 1 && ts[0].Type == "user") || IsHybrid(ts), nil
}

// Collapse replaces the table of the existing device P by the partition's
// dm-linear table (§5.5 step 2): the device node and anything mounted on it
// stay.
func (b *Builder) Collapse(name string, p Partition, sectors uint64) error {
	ts, err := LinearTargets(p, sectors)
	if err != nil {
		return err
	}
	if err := b.C.Reload(name, ts); err != nil {
		return fmt.Errorf("collapse %s to dm-linear: %w", name, err)
	}
	return nil
}

// RemoveRetry removes a dm device, retrying for up to 4 s while it is busy;
// a device that does not exist is success.
func (b *Builder) RemoveRetry(name string) error {
	if b.C == nil {
		return nil
	}
	deadline := time.Now().Add(4 * time.Second)
	for {
		err := b.C.Remove(name, false)
		if err == nil || errors.Is(err, unix.ENXIO) {
			os.Remove(MapperPath(name))
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(400 * time.Millisecond)
	}
}

// RemoveBacking removes <P>-base, <P>-src and <P>-cow-img and detaches the
// loop device of the COW image (§5.5 steps 4–5, §4.8).
func (b *Builder) RemoveBacking(name, image string) error {
	var errs []error
	for _, n := range []string{BaseName(name), SrcName(name), CowImageName(name)} {
		if err := b.RemoveRetry(n); err != nil {
			errs = append(errs, err)
		}
	}
	if lp, err := FindLoop(image); err == nil && lp != "" {
		if err := loop.Detach(lp); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// FindLoop returns the loop device whose backing file is image, or "".
func FindLoop(image string) (string, error) {
	ents, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		b, err := os.ReadFile(e)
		if err == nil && strings.TrimSpace(string(b)) == image {
			return "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(e))), nil
		}
	}
	return "", nil
}

// WaitPath waits for a path to exist (ueventd is not running in first stage).
func WaitPath(ctx context.Context, p string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		if _, err := os.Stat(p); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", p, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
