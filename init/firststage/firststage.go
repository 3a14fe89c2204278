// Package firststage is first-stage init's snapshot work and the SELinux
// transition of the snapuserd daemon (snapshot-lifecycle.md §4.1–§4.7,
// snapuserd.md §10):
//
//   - Decide: the slot class from snapshot-boot (§3.4) and whether snapshots
//     are mapped (§4.2); on the source slot write rollback-indicator.
//   - Mount: launch the first-stage daemon (-user_snapshot, own socket),
//     map every partition under LOCK_EX — a live snapshot as the stack of
//     init/stack with misc name <P>-init followed by init and start, the
//     rest as plain dm-linear — then detach the daemon and unlink its socket.
//   - Transition: reload each dm-user table to misc <P>, SIGTERM the first
//     daemon, start snapuserd -no_socket with the §4.6 argv, wait for the
//     daemon-alive indicator and probe-read the system partition with
//     O_DIRECT.
package firststage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/init/stack"
	"github.com/vabc-go/vabc/init/state"
	"github.com/vabc-go/vabc/snapuserd/client"
)

// Class is the slot classification of §3.4.
type Class int

// Classes.
const (
	Unknown Class = iota // no finished update
	Source               // running the slot the update was installed from
	Target               // booted into the updated slot
)

func (c Class) String() string { return [...]string{"Unknown", "Source", "Target"}[c] }

// Classify reads snapshot-boot.
func Classify(d state.Dir, suffix string) (Class, error) {
	b, err := d.ReadFile(state.SnapshotBoot)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && b == "") {
		return Unknown, nil
	}
	if err != nil {
		return Unknown, err
	}
	if b == suffix {
		return Source, nil
	}
	return Target, nil
}

// Config describes the device.
type Config struct {
	Dir       state.Dir
	Suffix    string // current slot suffix
	Table     stack.Table
	ImageDir  string // where <P>-cow-img.img live
	B         *stack.Builder
	Snapuserd string // daemon binary
	Socket    string // first-stage control socket path
	Log       *slog.Logger
	// DaemonOut receives the daemons' stderr (nil: discarded).
	DaemonOut *os.File
	// Timeout bounds each wait for the daemons (connect, daemon-alive
	// indicator); 0 is AOSP's 10 s.
	Timeout time.Duration
}

func (cfg *Config) timeout() time.Duration {
	if cfg.Timeout > 0 {
		return cfg.Timeout
	}
	return 10 * time.Second
}

// Result is what Mount built.
type Result struct {
	Class     Class
	Snapshots []*stack.Mapped
	Plain     map[string]string // P → /dev/block/dm-N
	Daemon    *exec.Cmd         // the first-stage daemon (nil without snapshots)
}

// NeedSnapshots is NeedSnapshotsInFirstStageMount (§4.2).
func NeedSnapshots(d state.Dir, suffix string) (bool, Class, error) {
	if !d.Exists(state.SnapshotBoot) {
		return false, Unknown, nil
	}
	l, err := d.Lock(false)
	if err != nil {
		return false, Unknown, fmt.Errorf("first stage: %w", err) // fatal, as in AOSP
	}
	defer l.Unlock()
	c, err := Classify(d, suffix)
	if err != nil {
		return false, c, err
	}
	switch c {
	case Source:
		return false, c, d.WriteIndicator(state.RollbackIndicator)
	case Unknown:
		return false, c, nil
	}
	st, err := d.ReadUpdateStatus()
	if err != nil {
		return false, c, err
	}
	switch st.State {
	case state.Unverified, state.Merging, state.MergeFailed:
		return true, c, nil
	}
	return false, c, nil
}

func (cfg *Config) logf(msg string, args ...any) {
	if cfg.Log != nil {
		cfg.Log.Info(msg, args...)
	}
}

// Mount maps every partition of the current slot.
func Mount(ctx context.Context, cfg *Config) (res *Result, err error) {
	need, class, err := NeedSnapshots(cfg.Dir, cfg.Suffix)
	if err != nil {
		return nil, err
	}
	res = &Result{Class: class, Plain: map[string]string{}}
	cfg.logf("first stage", "slot", cfg.Suffix, "class", class, "snapshots", need)
	if !need {
		return res, mapPlain(cfg, res, nil)
	}
	l, err := cfg.Dir.Lock(true)
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	ust, err := cfg.Dir.ReadUpdateStatus()
	if err != nil {
		return nil, err
	}
	if !ust.UsingSnapuserd || !ust.UserspaceSnapshots {
		return nil, fmt.Errorf("first stage: update without userspace snapshots (using_snapuserd %v, userspace_snapshots %v) is not supported",
			ust.UsingSnapuserd, ust.UserspaceSnapshots)
	}
	cl, daemon, err := launchFirstStage(ctx, cfg)
	if err != nil {
		return nil, err
	}
	res.Daemon = daemon
	defer cl.Close()
	defer func() {
		if err != nil {
			daemon.Process.Kill()
			daemon.Wait()
		}
	}()
	snapped := map[string]bool{}
	for _, p := range cfg.Table {
		name := p.Name + cfg.Suffix
		st, err := cfg.Dir.ReadSnapshot(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !stack.LiveSnapshot(st) {
			continue
		}
		plan, err := stack.PlanSnapshot(p, name, st, cfg.ImageDir, true)
		if err != nil {
			return nil, err
		}
		m, err := cfg.B.MapSnapshot(ctx, plan)
		if err != nil {
			return nil, err
		}
		n, err := cl.InitDmUserCow(m.Misc, m.Cow, m.Src, m.Base)
		if err != nil {
			return nil, err
		}
		if n != m.Sectors {
			return nil, fmt.Errorf("first stage: snapuserd serves %d sectors of %s, the device has %d", n, m.Misc, m.Sectors)
		}
		if err := cl.AttachDmUser(m.Misc); err != nil {
			return nil, err
		}
		res.Snapshots = append(res.Snapshots, m)
		snapped[p.Name] = true
	}
	if err := mapPlain(cfg, res, snapped); err != nil {
		return nil, err
	}
	// CleanupSnapuserdSocket: detach the daemon, free the socket path.
	if err := cl.DetachSnapuserd(); err != nil {
		return nil, err
	}
	os.Remove(cfg.Socket)
	return res, nil
}

func mapPlain(cfg *Config, res *Result, skip map[string]bool) error {
	for _, p := range cfg.Table {
		if skip[p.Name] {
			continue
		}
		name := p.Name + cfg.Suffix
		path, err := cfg.B.MapPlain(name, p, p.Sectors())
		if err != nil {
			return err
		}
		res.Plain[name] = path
	}
	return nil
}

// launchFirstStage starts snapuserd -user_snapshot with its socket,
// connects within 10 s, probes the hand-off support and removes the
// daemon-alive indicator (§4.1 step 3).
func launchFirstStage(ctx context.Context, cfg *Config) (*client.Client, *exec.Cmd, error) {
	os.Remove(cfg.Socket)
	cmd := exec.Command(cfg.Snapuserd, "-user_snapshot", "-socket", cfg.Socket)
	cmd.Stdout, cmd.Stderr = cfg.DaemonOut, cfg.DaemonOut
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("first stage: start %s: %w", cfg.Snapuserd, err)
	}
	cl, err := client.Connect(ctx, cfg.Socket, cfg.timeout())
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, nil, fmt.Errorf("first stage: snapuserd did not open %s: %w", cfg.Socket, err)
	}
	if ok, err := cl.SupportsSecondStageSocketHandoff(); err == nil && ok {
		if err := cfg.Dir.WriteIndicator(state.SnapuserdFromSystem); err != nil {
			cfg.logf("snapuserd-from-system", "err", err)
		}
		os.Setenv("FIRST_STAGE_SNAPUSERD_INFO", "socket")
	}
	os.Setenv("FIRST_STAGE_SNAPUSERD_PID", strconv.Itoa(cmd.Process.Pid))
	if err := cfg.Dir.Remove(state.DaemonAliveIndicator); err != nil {
		cfg.logf("daemon-alive-indicator", "err", err)
	}
	cfg.logf("first-stage snapuserd running", "pid", cmd.Process.Pid, "socket", cfg.Socket)
	return cl, cmd, nil
}

// DaemonArgs is PrepareSnapuserdArgsForSelinux (§4.6).
func DaemonArgs(st state.UpdateStatus, snaps []*stack.Mapped) []string {
	args := []string{"-no_socket", "-user_snapshot"}
	if st.IOUringEnabled {
		args = append(args, "-io_uring")
	}
	if st.ODirect {
		args = append(args, "-o_direct")
	}
	if st.CowOpMergeSize != 0 {
		args = append(args, "-cow_op_merge_size="+strconv.FormatUint(uint64(st.CowOpMergeSize), 10))
	}
	if st.NumWorkerThreads != 0 {
		args = append(args, "-worker_count="+strconv.FormatUint(uint64(st.NumWorkerThreads), 10))
	}
	for _, m := range snaps {
		c := *m
		c.Misc = stack.MiscName(m.Name, false)
		args = append(args, c.InitArgs())
	}
	return args
}

// Transition hands the snapshots from the first-stage daemon to a
// -no_socket daemon (§4.7 step 2) and returns the new daemon.
func Transition(ctx context.Context, cfg *Config, res *Result, probe string) (*exec.Cmd, error) {
	if len(res.Snapshots) == 0 {
		return nil, nil
	}
	ust, err := cfg.Dir.ReadUpdateStatus()
	if err != nil {
		return nil, err
	}
	args := DaemonArgs(ust, res.Snapshots)
	if cfg.Dir.Path != state.DefaultDir {
		// Ours: the daemon writes the indicator where this D is.
		args = append(args[:2:2], append([]string{"-daemon_alive_indicator", cfg.Dir.Path + "/" + state.DaemonAliveIndicator}, args[2:]...)...)
	}
	for _, m := range res.Snapshots {
		misc := stack.MiscName(m.Name, false)
		if err := cfg.B.Retarget(ctx, m.Name, m.Sectors, misc); err != nil {
			return nil, err
		}
		m.Misc = misc
	}
	if res.Daemon != nil {
		res.Daemon.Process.Signal(syscall.SIGTERM)
		go res.Daemon.Wait()
	}
	cmd := exec.Command(cfg.Snapuserd, args...)
	cmd.Stdout, cmd.Stderr = cfg.DaemonOut, cfg.DaemonOut
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("transition: start %s: %w", cfg.Snapuserd, err)
	}
	cfg.logf("second-stage snapuserd started", "pid", cmd.Process.Pid, "args", args)
	alive := cfg.Dir.Path + "/" + state.DaemonAliveIndicator
	if err := stack.WaitPath(ctx, alive, cfg.timeout()); err != nil {
		return cmd, fmt.Errorf("transition: %w", err)
	}
	if probe != "" {
		if err := probeRead(ctx, probe); err != nil {
			return cmd, err
		}
	}
	return cmd, nil
}

// probeRead reads the first page of dev with O_DIRECT, ≤ 10 tries 100 ms
// apart.
func probeRead(ctx context.Context, dev string) error {
	buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return err
	}
	defer unix.Munmap(buf)
	var last error
	for i := 0; i < 10; i++ {
		f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_DIRECT, 0)
		if err == nil {
			_, err = f.ReadAt(buf, 0)
			f.Close()
			if err == nil {
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("transition: %s not readable: %w", dev, last)
}
