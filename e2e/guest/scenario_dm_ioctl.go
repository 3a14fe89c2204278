package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/kernel/dm"
	"github.com/vabc-go/vabc/kernel/loop"
)

func init() {
	register(scenario{name: "dm-ioctl", run: dmIoctl, limit: 90 * time.Second})
}

// dmIoctl drives the real kernel through kernel/dm only: version, targets, create, load,
// suspend, resume, status, table, list, wait, remove with linear, zero, error, snapshot,
// snapshot-origin and snapshot-merge targets, plus a loop device from kernel/loop.
func dmIoctl(ctx context.Context, e *env) error {
	c, err := dm.Open()
	if err != nil {
		return err
	}
	defer c.Close()

	v, err := c.Version()
	if err != nil {
		return err
	}
	if v[0] != 4 {
		return fmt.Errorf("dm interface version %v, want 4.x", v)
	}
	e.logf("dm interface %d.%d.%d", v[0], v[1], v[2])

	ts, err := c.Targets()
	if err != nil {
		return err
	}
	var names []string
	for _, t := range ts {
		names = append(names, t.String())
	}
	e.logf("targets: %v", names)
	for _, want := range []string{"linear", "zero", "error", "snapshot", "snapshot-origin", "snapshot-merge", "user"} {
		if !slices.ContainsFunc(ts, func(t dm.TargetVersion) bool { return t.Name == want }) {
			return fmt.Errorf("target %q not registered (have %v)", want, names)
		}
	}

	// Cross-check with libdevmapper: "dmsetup targets" must list user too.
	if out, err := dmsetup(ctx, "targets"); err != nil {
		return err
	} else if !strings.Contains(out, "user ") {
		return fmt.Errorf("dmsetup targets does not list user:\n%s", out)
	} else {
		e.logf("dmsetup targets: %s", strings.Join(strings.Fields(out), " "))
	}

	steps := []struct {
		name string
		fn   func(context.Context, *env, *dm.Control) error
	}{
		{"linear-zero-error", dmLinearZeroError},
		{"suspend-reload", dmSuspendReload},
		{"snapshot-merge-android", dmSnapshotMergeAndroid},
		{"snapshot-origin-lvm", dmSnapshotOriginLVM},
		{"wait-overflow-loop", dmWaitOverflow},
	}
	for _, s := range steps {
		t0 := time.Now()
		if err := s.fn(ctx, e, c); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		e.logf("%s ok (%.2fs)", s.name, time.Since(t0).Seconds())
	}
	return nil
}

func dmLinearZeroError(ctx context.Context, e *env, c *dm.Control) error {
	const name = "t-lin"
	defer cleanup(c, name)
	if err := directWrite(diskOrigin, 1<<20, pattern('L', 4096)); err != nil {
		return err
	}
	table := []dm.Target{
		dm.Linear(0, 2048, diskOrigin, 2048), // device 0..1 MiB = origin 1..2 MiB
		dm.Zero(2048, 2048),
		dm.Error(4096, 8),
	}
	path, err := c.CreateDevice(name, table, nil)
	if err != nil {
		return err
	}
	if n, err := sectors(path); err != nil || n != 4104 {
		return fmt.Errorf("size of %s = %d sectors, %v; want 4104", path, n, err)
	}
	if err := expectBlock(path, 0, 'L'); err != nil {
		return err
	}
	if err := expectBlock(path, 1<<20, 0); err != nil {
		return err
	}
	if _, err := directRead(path, 2<<20, 4096); !errors.Is(err, unix.EIO) {
		return fmt.Errorf("read of the error target: %v, want EIO", err)
	}
	got, err := c.Table(name)
	if err != nil {
		return err
	}
	wantParams := devName(diskOrigin) + " 2048"
	if len(got) != 3 || got[0].Type != "linear" || got[0].Params != wantParams || got[1].Type != "zero" ||
		got[2].Type != "error" || got[2].Start != 4096 || got[2].Length != 8 {
		return fmt.Errorf("table = %v, want linear %s / zero / error", got, wantParams)
	}
	// libdevmapper decodes the same table from the kernel.
	out, err := dmsetup(ctx, "table", name)
	if err != nil {
		return err
	}
	var lines []string
	for _, t := range got {
		lines = append(lines, strings.TrimSpace(t.String()))
	}
	var dmLines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		dmLines = append(dmLines, strings.TrimSpace(l))
	}
	if !slices.Equal(dmLines, lines) {
		return fmt.Errorf("dmsetup table:\n%s\nkernel/dm table:\n%s", out, strings.Join(lines, "\n"))
	}
	st, err := c.Status(name)
	if err != nil {
		return err
	}
	if len(st) != 3 || st[0].Type != "linear" {
		return fmt.Errorf("status = %v", st)
	}
	info, err := c.Info(name)
	if err != nil {
		return err
	}
	if info.Flags&dm.FlagActivePresent == 0 || info.Suspended() || info.TargetCount != 3 {
		return fmt.Errorf("info = %+v", info)
	}
	list, err := c.ListDevices()
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(list, func(d dm.NameListEntry) bool { return d.Name == name && d.Dev == info.Dev }) {
		return fmt.Errorf("list devices %v lacks %s", list, name)
	}
	if err := c.Remove(name, false); err != nil {
		return err
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s still exists after remove: %v", path, err)
	}
	if _, err := c.Info(name); !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("info after remove: %v, want ENXIO", err)
	}
	return nil
}

func dmSuspendReload(ctx context.Context, e *env, c *dm.Control) error {
	const name = "t-reload"
	defer cleanup(c, name)
	path, err := c.CreateDevice(name, []dm.Target{dm.Linear(0, 2048, diskOrigin, 2048)}, nil)
	if err != nil {
		return err
	}
	if err := c.Suspend(name, false); err != nil {
		return err
	}
	info, err := c.Info(name)
	if err != nil || !info.Suspended() {
		return fmt.Errorf("after suspend: %+v, %v", info, err)
	}
	if err := c.Load(name, []dm.Target{dm.Zero(0, 4096)}, nil); err != nil {
		return err
	}
	inactive, err := c.InactiveTable(name)
	if err != nil || len(inactive) != 1 || inactive[0].Type != "zero" {
		return fmt.Errorf("inactive table = %v, %v", inactive, err)
	}
	if _, err := c.Resume(name); err != nil {
		return err
	}
	if n, err := sectors(path); err != nil || n != 4096 {
		return fmt.Errorf("size after reload = %d, %v; want 4096", n, err)
	}
	if err := expectBlock(path, 0, 0); err != nil {
		return err
	}
	// A bad table is rejected with an error naming the ioctl, and the live table stays.
	err = c.Load(name, []dm.Target{dm.Linear(0, 8, "/dev/does-not-exist", 0)}, nil)
	var pe *os.PathError
	if !errors.As(err, &pe) || pe.Op != "DM_TABLE_LOAD" {
		return fmt.Errorf("bad load: %v, want *os.PathError from DM_TABLE_LOAD", err)
	}
	live, err := c.Table(name)
	if err != nil || len(live) != 1 || live[0].Type != "zero" {
		return fmt.Errorf("live table after failed load = %v, %v", live, err)
	}
	return nil
}

// zeroCOWHeader makes the snapshot target create a fresh persistent store.
func zeroCOWHeader(cow string) error {
	return directWrite(cow, 0, make([]byte, 4096))
}

func waitMerged(ctx context.Context, c *dm.Control, name string) error {
	return waitFor(ctx, "merge of "+name, 20*time.Millisecond, func() (bool, error) {
		st, err := c.Status(name)
		if err != nil {
			return false, err
		}
		if len(st) != 1 || st[0].Type != "snapshot-merge" {
			return false, fmt.Errorf("status %v", st)
		}
		s, err := dm.ParseSnapshotStatus(st[0].Params)
		if err != nil {
			return false, err
		}
		if s.Invalid || s.MergeFailed || s.Overflow {
			return false, fmt.Errorf("merge status %q", st[0].Params)
		}
		return s.MergeDone(), nil
	})
}

// Android style (vm-harness.md §6.2 a): one device whose table goes snapshot -> snapshot-merge.
func dmSnapshotMergeAndroid(ctx context.Context, e *env, c *dm.Control) error {
	const name = "t-snap"
	defer cleanup(c, name)
	size, err := sectors(diskOrigin)
	if err != nil {
		return err
	}
	if err := directWrite(diskOrigin, 1<<20, pattern('A', 4096)); err != nil {
		return err
	}
	if err := directWrite(diskOrigin, 5<<20, pattern('C', 4096)); err != nil {
		return err
	}
	if err := zeroCOWHeader(diskCOW); err != nil {
		return err
	}
	path, err := c.CreateDevice(name, []dm.Target{dm.Snapshot(0, size, diskOrigin, diskCOW, true, dm.DefaultChunkSectors)}, nil)
	if err != nil {
		return err
	}
	if err := directWrite(path, 1<<20, pattern('B', 4096)); err != nil {
		return err
	}
	if err := expectBlock(path, 1<<20, 'B'); err != nil {
		return err
	}
	if err := expectBlock(diskOrigin, 1<<20, 'A'); err != nil {
		return fmt.Errorf("origin changed before merge: %w", err)
	}
	st, err := c.Status(name)
	if err != nil {
		return err
	}
	s, err := dm.ParseSnapshotStatus(st[0].Params)
	if err != nil {
		return err
	}
	if s.SectorsAllocated != 24 || s.MetadataSectors != 16 {
		return fmt.Errorf("snapshot status %q, want 24/<total> 16", st[0].Params)
	}
	e.logf("snapshot status %q", st[0].Params)
	if err := c.Reload(name, []dm.Target{dm.SnapshotMerge(0, size, diskOrigin, diskCOW, true, dm.DefaultChunkSectors)}); err != nil {
		return err
	}
	if err := waitMerged(ctx, c, name); err != nil {
		return err
	}
	if err := c.Remove(name, false); err != nil {
		return err
	}
	if err := expectBlock(diskOrigin, 1<<20, 'B'); err != nil {
		return fmt.Errorf("after merge: %w", err)
	}
	return expectBlock(diskOrigin, 5<<20, 'C')
}

// LVM style (vm-harness.md §6.2 b): snapshot-origin + snapshot, origin writes copy out.
func dmSnapshotOriginLVM(ctx context.Context, e *env, c *dm.Control) error {
	const base, snap = "t-base", "t-snap2"
	defer cleanup(c, snap, base)
	size, err := sectors(diskOrigin)
	if err != nil {
		return err
	}
	if err := zeroCOWHeader(diskCOW); err != nil {
		return err
	}
	basePath, err := c.CreateDevice(base, []dm.Target{dm.SnapshotOrigin(0, size, diskOrigin)}, nil)
	if err != nil {
		return err
	}
	snapPath, err := c.CreateDevice(snap, []dm.Target{dm.Snapshot(0, size, diskOrigin, diskCOW, true, dm.DefaultChunkSectors)}, nil)
	if err != nil {
		return err
	}
	if err := directWrite(snapPath, 1<<20, pattern('D', 4096)); err != nil {
		return err
	}
	if err := directWrite(basePath, 5<<20, pattern('E', 4096)); err != nil {
		return err
	}
	if err := expectBlock(snapPath, 5<<20, 'C'); err != nil {
		return fmt.Errorf("copy-out: %w", err)
	}
	if err := expectBlock(basePath, 5<<20, 'E'); err != nil {
		return err
	}
	if err := c.Remove(snap, false); err != nil {
		return err
	}
	return c.Remove(base, false)
}

// dmWaitOverflow puts a snapshot's COW on a tiny loop device (kernel/loop), overflows it and
// checks that DM_DEV_WAIT returns with the "Invalid" status.
func dmWaitOverflow(ctx context.Context, e *env, c *dm.Control) error {
	const name = "t-ovf"
	defer cleanup(c, name)
	img := "/tmp/small-cow.img"
	if err := os.WriteFile(img, make([]byte, 64<<10), 0o600); err != nil {
		return err
	}
	defer os.Remove(img)
	ld, err := loop.Attach(img, &loop.Options{DirectIO: true})
	if err != nil {
		return err
	}
	defer loop.Detach(ld.Path)
	if st, err := loop.GetStatus(ld.Path); err != nil || st.BackingFile != img {
		return fmt.Errorf("loop status %+v, %v", st, err)
	}
	size, err := sectors(diskOrigin)
	if err != nil {
		return err
	}
	path, err := c.CreateDevice(name, []dm.Target{dm.Snapshot(0, size, diskOrigin, ld.Path, true, dm.DefaultChunkSectors)}, nil)
	if err != nil {
		return err
	}
	info, err := c.Info(name)
	if err != nil {
		return err
	}
	type waitResult struct {
		status []dm.Target
		err    error
	}
	ch := make(chan waitResult, 1)
	go func() {
		_, st, err := c.Wait(name, info.EventNr)
		ch <- waitResult{st, err}
	}()
	// 64 KiB COW = header + metadata + at most 14 data chunks; write 32 chunks.
	for i := 0; i < 32; i++ {
		if err := directWrite(path, int64(i)*4096*16, pattern('O', 4096)); err != nil {
			break // the snapshot becomes invalid and writes start failing
		}
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return r.err
		}
		if len(r.status) != 1 || r.status[0].Params != "Invalid" {
			return fmt.Errorf("status after overflow event = %v, want Invalid", r.status)
		}
		s, err := dm.ParseSnapshotStatus(r.status[0].Params)
		if err != nil || !s.Invalid {
			return fmt.Errorf("parse %q: %+v %v", r.status[0].Params, s, err)
		}
	case <-time.After(15 * time.Second):
		return errors.New("DM_DEV_WAIT did not return after the snapshot overflowed")
	}
	return nil
}

// dmsetup runs the initramfs copy of libdevmapper's dmsetup without udev (vm-harness.md §12
// trap 1).
func dmsetup(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "/sbin/dmsetup", args...)
	cmd.Env = append(os.Environ(), "DM_DISABLE_UDEV=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("dmsetup %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
