package main

// The legacy scenarios: Android 12's dm-snapshot compatibility stack (snapuserd.md §1
// "Mode A", §3) on the real kernel, over the snapuserd scenarios' images. /bin/snapuserd
// (without -user_snapshot) answers the 4-field init with the size of the dm-snapshot
// persistent exception store it synthesizes from the COW; the store is served on a dm-user
// device, and the kernel's own `snapshot <base> <dm-user> P 8` target sits on top, exactly
// as Android 12's libsnapshot stacks it. The merge is the kernel's: the table is switched
// to snapshot-merge and the daemon follows the kernel's metadata writes. After the VM
// reboots, the base disks must equal the target (the after-reboot checks are the snapuserd
// scenarios' own, for the same disks).

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/vabc-go/vabc/kernel/dm"
	"github.com/vabc-go/vabc/snapuserd/client"
)

func init() {
	register(scenario{name: "legacy-snapshot", run: legacySnapshot, afterReboot: snapuserdUserAfterReboot, limit: 150 * time.Second})
	register(scenario{name: "legacy-merge", run: legacyMerge, afterReboot: snapuserdKillAfterReboot, limit: 150 * time.Second})
}

// dmUserTimeout is the dm-user module's daemon timeout parameter: how long queued I/O
// waits for a (restarted) daemon before it fails.
const dmUserTimeout = "/sys/module/dm_user/parameters/dm_user_daemon_timeout_msec"

// legacyStack is one partition in Android 12's layout: <dev>-user-cow (dm-user, the
// daemon's synthesized store) under <dev> (snapshot of the base).
type legacyStack struct {
	e        *env
	c        *dm.Control
	dev      string // the partition (snapshot / snapshot-merge target)
	misc     string // dm-user device and misc name
	base     string
	cow      string
	sock     string
	sectors  uint64 // partition size
	store    uint64 // synthesized store size in sectors (init's reply)
	path     string // /dev/mapper/<dev>
	userPath string // /dev/mapper/<misc>
	d        *daemonProc
}

func newLegacyStack(e *env, c *dm.Control, dev, base, cow string) *legacyStack {
	return &legacyStack{e: e, c: c, dev: dev, misc: dev + "-user-cow", base: base, cow: cow, sock: "/run/snapuserd-legacy-" + dev}
}

func (s *legacyStack) startDaemon(ctx context.Context) error {
	d, err := startProcess(s.e, "snapuserd", "/bin/snapuserd", "-socket", s.sock)
	if err != nil {
		return err
	}
	s.d = d
	cl, err := client.Connect(ctx, s.sock, 10*time.Second)
	if err != nil {
		return fmt.Errorf("snapuserd did not open %s: %w", s.sock, err)
	}
	defer cl.Close()
	if r, err := cl.Query(); err != nil || r != "active" {
		return fmt.Errorf("query: %q, %v", r, err)
	}
	return nil
}

// initStart sends the 4-field init (Android 12 libsnapshot: the dm-user device is created
// after init, with init's size), creates the dm-user device if it does not exist yet, and
// starts the handler.
func (s *legacyStack) initStart(ctx context.Context) error {
	cl, err := client.Connect(ctx, s.sock, 5*time.Second)
	if err != nil {
		return err
	}
	defer cl.Close()
	n, err := cl.InitDmUserCow(s.misc, s.cow, s.base, "")
	if err != nil {
		return fmt.Errorf("legacy init: %w", err)
	}
	if s.store != 0 && n != s.store {
		return fmt.Errorf("legacy init after restart replied %d sectors, the first init %d", n, s.store)
	}
	if s.store == 0 {
		s.store = n
		if s.userPath, err = s.c.CreateDevice(s.misc, []dm.Target{dm.User(0, n, s.misc)}, nil); err != nil {
			return err
		}
	}
	if err := cl.AttachDmUser(s.misc); err != nil {
		return err
	}
	return waitFor(ctx, "snapuserd channel on "+s.misc, 10*time.Millisecond, func() (bool, error) {
		st, err := userStatus(s.c, s.misc)
		return err == nil && st.Channels >= 1, err
	})
}

// createSnapshot stacks the kernel's snapshot target on the base and the store.
func (s *legacyStack) createSnapshot() error {
	n, err := sectors(s.base)
	if err != nil {
		return err
	}
	s.sectors = n
	s.path, err = s.c.CreateDevice(s.dev, []dm.Target{dm.Snapshot(0, n, s.base, s.userPath, true, dm.DefaultChunkSectors)}, nil)
	return err
}

func (s *legacyStack) status() (dm.SnapshotStatus, error) {
	st, err := s.c.Status(s.dev)
	if err != nil {
		return dm.SnapshotStatus{}, err
	}
	if len(st) != 1 || (st[0].Type != "snapshot" && st[0].Type != "snapshot-merge") {
		return dm.SnapshotStatus{}, fmt.Errorf("status of %s = %v", s.dev, st)
	}
	return dm.ParseSnapshotStatus(st[0].Params)
}

// startMerge swaps the table to snapshot-merge (libsnapshot's SwitchSnapshotToMerge).
func (s *legacyStack) startMerge() (dm.SnapshotStatus, error) {
	st, err := s.status()
	if err != nil {
		return st, err
	}
	s.e.logf("status before the merge: %d/%d %d", st.SectorsAllocated, st.TotalSectors, st.MetadataSectors)
	if st.TotalSectors != s.store {
		return st, fmt.Errorf("kernel sees a %d-sector exception store, init replied %d", st.TotalSectors, s.store)
	}
	err = s.c.Reload(s.dev, []dm.Target{dm.SnapshotMerge(0, s.sectors, s.base, s.userPath, true, dm.DefaultChunkSectors)})
	return st, err
}

// waitMerge polls the kernel's status until only metadata is allocated.
func (s *legacyStack) waitMerge(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, mergeLimit)
	defer cancel()
	var last dm.SnapshotStatus
	err := waitFor(ctx, "kernel merge of "+s.dev, 20*time.Millisecond, func() (bool, error) {
		st, err := s.status()
		if err != nil {
			return false, err
		}
		last = st
		if st.Invalid || st.MergeFailed || st.Overflow {
			return false, fmt.Errorf("snapshot-merge status %+v", st)
		}
		return st.MergeDone(), nil
	})
	if err != nil {
		return fmt.Errorf("%w (last status %d/%d %d)", err, last.SectorsAllocated, last.TotalSectors, last.MetadataSectors)
	}
	return nil
}

// finish: libsnapshot's end of a merge: the partition becomes dm-linear over the base, the
// dm-user device goes away, the handler is deleted and the daemon stopped.
func (s *legacyStack) finish(ctx context.Context, want string) error {
	if err := s.c.Reload(s.dev, []dm.Target{dm.Linear(0, s.sectors, s.base, 0)}); err != nil {
		return fmt.Errorf("swap %s to dm-linear: %w", s.dev, err)
	}
	if err := expectHash(s.path, want, "dm-linear over the merged base"); err != nil {
		return err
	}
	if err := s.c.Remove(s.misc, false); err != nil {
		return err
	}
	cl, err := client.Connect(ctx, s.sock, 5*time.Second)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.WaitForDeviceDelete(s.misc); err != nil {
		return err
	}
	if err := s.c.Remove(s.dev, false); err != nil {
		return err
	}
	if err := cl.StopSnapuserd(); err != nil {
		return err
	}
	code, err := s.d.wait(10 * time.Second)
	s.d = nil
	if err != nil {
		return fmt.Errorf("snapuserd after stop: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("snapuserd exited with status %d after stop", code)
	}
	return nil
}

func (s *legacyStack) close() {
	cleanup(s.c, s.dev) // the snapshot first: it holds the dm-user device open
	if s.d != nil {
		s.d.kill()
		s.d = nil
	}
	cleanup(s.c, s.misc)
}

func (s *legacyStack) failf(err error) error {
	if err == nil || s.d == nil {
		return err
	}
	if out := s.d.output(); out != "" {
		lines := strings.Split(strings.TrimSpace(out), "\n")
		s.e.logf("last snapuserd output: %s", lines[len(lines)-1])
	}
	return err
}

// setup restores the pristine images and brings the stack up to a readable snapshot.
func (s *legacyStack) setup(ctx context.Context, p snapParams) error {
	if err := restore(ctx, s.base, s.cow); err != nil {
		return err
	}
	if err := s.startDaemon(ctx); err != nil {
		return err
	}
	if err := s.initStart(ctx); err != nil {
		return err
	}
	if err := s.createSnapshot(); err != nil {
		return err
	}
	return expectHash(s.path, p.sha256, "kernel snapshot over the legacy store")
}

// legacySnapshot: the kernel snapshot reads as the target and mounts with the new files;
// the kernel's snapshot-merge completes and the base equals the target (now and after the
// reboot). Then the same COW is merged once more in userspace-snapshot mode, for the
// kernel-merge vs user-merge metric.
func legacySnapshot(ctx context.Context, e *env) error {
	p, err := snapParamsFrom(cmdline())
	if err != nil {
		return err
	}
	c, err := dm.Open()
	if err != nil {
		return err
	}
	defer c.Close()
	s := newLegacyStack(e, c, "system_b", diskUserBase, diskUserCOW)
	defer s.close()
	var kernelSecs float64
	err = func() error {
		if err := s.setup(ctx, p); err != nil {
			return err
		}
		if err := checkMount(ctx, s.path, "/mnt/snap", p.token); err != nil {
			return err
		}
		if err := expectNotEqualHash(s.base, p.sha256); err != nil {
			return err
		}
		t0 := time.Now()
		if _, err := s.startMerge(); err != nil {
			return err
		}
		if err := s.waitMerge(ctx); err != nil {
			return err
		}
		kernelSecs = time.Since(t0).Seconds()
		e.logf("kernel merge took %.2fs", kernelSecs)
		if err := expectHash(s.path, p.sha256, "snapshot-merge device after the merge"); err != nil {
			return err
		}
		if err := s.finish(ctx, p.sha256); err != nil {
			return err
		}
		return expectHash(s.base, p.sha256, "base after the kernel merge")
	}()
	if err != nil {
		return s.failf(err)
	}
	// The same COW merged by the daemon itself (mode B), for the closing metric.
	if err := restore(ctx, diskUserBase, diskUserCOW); err != nil {
		return err
	}
	u := newSnapStack(e, c, "system_b", diskUserBase, diskUserCOW)
	defer u.close()
	err = func() error {
		if err := u.create(); err != nil {
			return err
		}
		if err := u.startDaemon(ctx); err != nil {
			return err
		}
		if err := u.initStart(ctx); err != nil {
			return err
		}
		t0 := time.Now()
		if err := u.mergeAndWait(ctx, ""); err != nil {
			return err
		}
		userSecs := time.Since(t0).Seconds()
		fmt.Printf("VMTEST-METRIC: legacy_kernel_merge_s=%.2f user_merge_s=%.2f ratio=%.2f\n", kernelSecs, userSecs, kernelSecs/userSecs)
		return u.finish(ctx, p.sha256)
	}()
	if err != nil {
		return u.failf(err)
	}
	return expectHash(diskUserBase, p.sha256, "base after the user-mode merge")
}

// legacyMerge: SIGKILL the daemon while the kernel merges; the kernel's I/O waits in the
// dm-user queue, a new daemon (init + start again, same store size) picks it up, the
// partition read while the merge goes on equals the target, the merge completes and the
// base equals the target.
func legacyMerge(ctx context.Context, e *env) error {
	p, err := snapParamsFrom(cmdline())
	if err != nil {
		return err
	}
	c, err := dm.Open()
	if err != nil {
		return err
	}
	defer c.Close()
	// The restart takes a few seconds under TCG: give it more than the default 4 s.
	if old, err := os.ReadFile(dmUserTimeout); err == nil {
		if err := os.WriteFile(dmUserTimeout, []byte("60000"), 0); err != nil {
			return err
		}
		defer os.WriteFile(dmUserTimeout, old, 0)
	}
	s := newLegacyStack(e, c, "product_b", diskKillBase, diskKillCOW)
	defer s.close()
	err = func() error {
		if err := s.setup(ctx, p); err != nil {
			return err
		}
		before, err := s.startMerge()
		if err != nil {
			return err
		}
		// Kill as soon as the kernel has merged something but not everything.
		t0 := time.Now()
		pctx, cancel := context.WithTimeout(ctx, mergeLimit)
		defer cancel()
		var st dm.SnapshotStatus
		for {
			if pctx.Err() != nil {
				return fmt.Errorf("kernel merge made no progress within %s", mergeLimit)
			}
			if st, err = s.status(); err != nil {
				return err
			}
			if st.MergeDone() {
				return fmt.Errorf("kernel merge completed after %s before the daemon could be killed", time.Since(t0).Round(time.Millisecond))
			}
			if st.SectorsAllocated < before.SectorsAllocated {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		s.d.cmd.Process.Signal(syscall.SIGKILL)
		<-s.d.done
		s.d = nil
		e.logf("SIGKILLed snapuserd %s into the kernel merge at %d/%d allocated sectors", time.Since(t0).Round(time.Millisecond), st.SectorsAllocated, before.SectorsAllocated)
		if err := s.startDaemon(ctx); err != nil {
			return fmt.Errorf("restart: %w", err)
		}
		if err := s.initStart(ctx); err != nil {
			return fmt.Errorf("restart: %w", err)
		}
		// The partition is read whole while the kernel merges on: merged chunks come from
		// the base, the others through the restarted daemon.
		readErr := make(chan error, 1)
		go func() { readErr <- expectHash(s.path, p.sha256, "snapshot-merge device read during the merge") }()
		if err := s.waitMerge(ctx); err != nil {
			<-readErr
			return fmt.Errorf("merge after the restart: %w", err)
		}
		e.logf("kernel merge completed %s after the kill", time.Since(t0).Round(time.Millisecond))
		if err := <-readErr; err != nil {
			return err
		}
		if err := expectHash(s.path, p.sha256, "snapshot-merge device after the merge"); err != nil {
			return err
		}
		if err := s.finish(ctx, p.sha256); err != nil {
			return err
		}
		return expectHash(diskKillBase, p.sha256, "base after the kernel merge")
	}()
	return s.failf(err)
}
