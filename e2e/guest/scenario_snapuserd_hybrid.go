package main

// snapuserd-hybrid: the partition's table built as a hybrid (snapuserd/hybrid.go): blocks
// the COW leaves unchanged and Zero ops served by dm-linear / dm-zero, Copy ops by dm-linear
// onto their source blocks while no merge runs, only the rest by /bin/snapuserd over dm-user.
// The device reads as the target before the merge; the table is reloaded to the merging
// plan before initiate_merge and re-planned from the COW's committed num_merge_ops every
// ~100 ms while the merge runs and a reader hashes the whole device again and again; every
// pass must hash to the target; after the merge the base equals the target (and after the
// reboot). Also the VM's PERF lines: snapuserd over one dm-user target and over the hybrid
// table, each ÷ dm-linear over the target image, dd bs=1M iflag=direct, same boot.

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vabc-go/vabc/kernel/dm"
	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/client"
)

const (
	diskHybBase = "/dev/vdj" // snapuserd-hybrid: base partition (source; merged into)
	diskHybCOW  = "/dev/vdk" // snapuserd-hybrid: COW
)

// hybridMinBlocks: kernel runs shorter than this go to the daemon (keeps the table short).
const hybridMinBlocks = 16

func init() {
	register(scenario{name: "snapuserd-hybrid", run: snapuserdHybrid, afterReboot: snapuserdHybridAfterReboot, limit: 150 * time.Second})
}

// hybridTable plans the table of s for phase from the COW as committed now.
func hybridTable(s *snapStack, phase snapuserd.HybridPhase) ([]dm.Target, []snapuserd.Segment, error) {
	segs, err := snapuserd.PlanHybridFile(s.cow, s.sectors, phase, hybridMinBlocks)
	if err != nil {
		return nil, nil, err
	}
	return snapuserd.HybridTargets(segs, s.misc, s.base, s.base), segs, nil
}

// hybridStatus is the dm-user status of the first user target of a (hybrid) table.
func hybridStatus(c *dm.Control, name string) (dm.UserStatus, error) {
	st, err := c.Status(name)
	if err != nil {
		return dm.UserStatus{}, err
	}
	for _, t := range st {
		if t.Type == "user" {
			return dm.ParseUserStatus(t.Params)
		}
	}
	return dm.UserStatus{}, fmt.Errorf("status of %s has no user target: %v", name, st)
}

func pct(segs []snapuserd.Segment, sectors uint64, k snapuserd.SegmentKind) float64 {
	return float64(snapuserd.HybridStats(segs)[k]) * 100 / float64(sectors)
}

func snapuserdHybrid(ctx context.Context, e *env) error {
	p, err := snapParamsFrom(cmdline())
	if err != nil {
		return err
	}
	if err := restore(ctx, diskHybBase, diskHybCOW); err != nil {
		return err
	}
	c, err := dm.Open()
	if err != nil {
		return err
	}
	defer c.Close()
	s := newSnapStack(e, c, "vendor_b", diskHybBase, diskHybCOW)
	defer s.close()
	ro := &dm.LoadOptions{ReadOnly: true}
	err = func() error {
		n, err := sectors(s.base)
		if err != nil {
			return err
		}
		s.sectors = n
		idle, idleSegs, err := hybridTable(s, snapuserd.HybridIdle)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(idleSegs, func(sg snapuserd.Segment) bool { return sg.Kind == snapuserd.SegSource }) {
			return fmt.Errorf("the idle plan of the scenario's COW has no Copy segment: nothing tests dm-linear onto the source")
		}
		e.logf("idle hybrid table: %d targets, %.0f%% base, %.0f%% source, %.0f%% zero, %.0f%% daemon", len(idle),
			pct(idleSegs, n, snapuserd.SegBase), pct(idleSegs, n, snapuserd.SegSource), pct(idleSegs, n, snapuserd.SegZero), pct(idleSegs, n, snapuserd.SegUser))
		// The hybrid device is read-only: a write through a linear segment would reach the
		// base (the source of the Copy ops), while the daemon refuses writes.
		if s.path, err = c.CreateDevice(s.dev, idle, &dm.CreateOptions{ReadOnly: true}); err != nil {
			return fmt.Errorf("create %s with the hybrid table: %w", s.dev, err)
		}
		if err := s.startDaemon(ctx); err != nil {
			return err
		}
		if _, err := snapshotctl(ctx, s.sock, "init", s.misc, s.cow, s.base, s.base); err != nil {
			return err
		}
		if _, err := snapshotctl(ctx, s.sock, "start", s.misc); err != nil {
			return err
		}
		if err := waitFor(ctx, "snapuserd channel on "+s.dev, 10*time.Millisecond, func() (bool, error) {
			st, err := hybridStatus(c, s.dev)
			return err == nil && st.Channels >= 1, err
		}); err != nil {
			return err
		}
		if err := expectHash(s.path, p.sha256, "hybrid snapshot before merge"); err != nil {
			return err
		}
		if err := checkMount(ctx, s.path, "/mnt/hyb", p.token); err != nil {
			return err
		}
		plain := []dm.Target{dm.User(0, n, s.misc)}
		if err := benchHybrid(ctx, c, s, plain, idle, idleSegs, ro); err != nil {
			return fmt.Errorf("bench: %w", err)
		}

		// The merge: reload to the merging plan first (invariant of snapuserd/hybrid.go).
		merging, _, err := hybridTable(s, snapuserd.HybridMerging)
		if err != nil {
			return err
		}
		if err := c.ReloadWith(s.dev, merging, ro); err != nil {
			return fmt.Errorf("reload %s to the merging plan: %w", s.dev, err)
		}
		if err := expectHash(s.path, p.sha256, "hybrid snapshot, merging plan, before initiate_merge"); err != nil {
			return err
		}
		mctx, cancel := context.WithTimeout(ctx, mergeLimit)
		defer cancel()
		cl, err := client.Connect(mctx, s.sock, 5*time.Second)
		if err != nil {
			return err
		}
		defer cl.Close()
		t0 := time.Now()
		if err := cl.InitiateMerge(s.misc); err != nil {
			return fmt.Errorf("initiate_merge: %w", err)
		}
		var done atomic.Bool
		var wg sync.WaitGroup
		var passes int
		var readErr error
		wg.Add(1)
		go func() { // the reader: whole-device passes until the merge is over, then one more
			defer wg.Done()
			for {
				last := done.Load()
				if readErr = expectHash(s.path, p.sha256, fmt.Sprintf("hybrid read pass %d during the merge", passes+1)); readErr != nil {
					return
				}
				passes++
				if last {
					return
				}
			}
		}()
		reloads := 0
		var mergeErr error
		for {
			st, err := cl.QuerySnapshotStatus(s.misc)
			if err != nil {
				mergeErr = err
				break
			}
			if st == "snapshot-merge-complete" {
				break
			}
			if st == "snapshot-merge-failed" || mctx.Err() != nil {
				mergeErr = fmt.Errorf("merge status %s after %s", st, time.Since(t0).Round(time.Millisecond))
				break
			}
			ts, _, err := hybridTable(s, snapuserd.HybridMerging)
			if err != nil {
				mergeErr = fmt.Errorf("re-plan during the merge: %w", err)
				break
			}
			if !slices.Equal(ts, merging) {
				if err := c.ReloadWith(s.dev, ts, ro); err != nil {
					mergeErr = fmt.Errorf("reload %s during the merge: %w", s.dev, err)
					break
				}
				reloads++
				merging = ts
			}
			time.Sleep(100 * time.Millisecond)
		}
		done.Store(true)
		wg.Wait()
		if mergeErr != nil {
			return mergeErr
		}
		if readErr != nil {
			return readErr
		}
		e.logf("merge took %.2fs; %d table reloads during it; %d whole-device read passes all equal the target",
			time.Since(t0).Seconds(), reloads, passes)
		if reloads == 0 {
			return fmt.Errorf("no table reload happened during the merge (%.2fs): the re-planning is untested", time.Since(t0).Seconds())
		}
		// After the merge: the final merging plan (all ops committed → the base).
		final, finalSegs, err := hybridTable(s, snapuserd.HybridMerging)
		if err != nil {
			return err
		}
		if u := snapuserd.HybridStats(finalSegs)[snapuserd.SegUser]; u > 8*hybridMinBlocks {
			return fmt.Errorf("after the merge the plan still sends %d sectors to the daemon", u)
		}
		if err := c.ReloadWith(s.dev, final, ro); err != nil {
			return err
		}
		if err := expectHash(s.path, p.sha256, "hybrid snapshot after merge"); err != nil {
			return err
		}
		if err := s.finish(ctx, p.sha256); err != nil {
			return err
		}
		return expectHash(diskHybBase, p.sha256, "base after merge")
	}()
	return s.failf(err)
}

// benchHybrid prints the PERF lines: best of two dd passes of the partition with one dm-user
// target, with the hybrid table, and of dm-linear over the target image, interleaved; the
// table is left as hybrid.
func benchHybrid(ctx context.Context, c *dm.Control, s *snapStack, plain, hybrid []dm.Target, segs []snapuserd.Segment, ro *dm.LoadOptions) error {
	const lin = "t-hyb-linear"
	linPath, err := c.CreateDevice(lin, []dm.Target{dm.Linear(0, s.sectors, diskTargetCopy, 0)}, &dm.CreateOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer cleanup(c, lin)
	size := int(s.sectors*512) &^ (1<<20 - 1)
	var plainRate, hybRate, linRate float64
	for i := 0; i < 2; i++ {
		if err := c.ReloadWith(s.dev, plain, ro); err != nil {
			return err
		}
		u, err := ddRate(ctx, s.path, size)
		if err != nil {
			return err
		}
		if err := c.ReloadWith(s.dev, hybrid, ro); err != nil {
			return err
		}
		h, err := ddRate(ctx, s.path, size)
		if err != nil {
			return err
		}
		l, err := ddRate(ctx, linPath, size)
		if err != nil {
			return err
		}
		plainRate, hybRate, linRate = max(plainRate, u), max(hybRate, h), max(linRate, l)
	}
	n := s.sectors
	fmt.Printf("PERF dmuser-read ratio=%.3f user_mib_s=%.1f linear_mib_s=%.1f size_mib=%d\n", plainRate/linRate, plainRate, linRate, size>>20)
	fmt.Printf("PERF dmuser-read-hybrid ratio=%.3f user_mib_s=%.1f linear_mib_s=%.1f size_mib=%d targets=%d base_pct=%.0f source_pct=%.0f zero_pct=%.0f daemon_pct=%.0f\n",
		hybRate/linRate, hybRate, linRate, size>>20, len(hybrid),
		pct(segs, n, snapuserd.SegBase), pct(segs, n, snapuserd.SegSource), pct(segs, n, snapuserd.SegZero), pct(segs, n, snapuserd.SegUser))
	return nil
}

func snapuserdHybridAfterReboot(ctx context.Context, e *env) error {
	p, err := snapParamsFrom(cmdline())
	if err != nil {
		return err
	}
	if err := waitDisk(ctx, diskHybBase); err != nil {
		return err
	}
	if err := expectHash(diskHybBase, p.sha256, "base after reboot"); err != nil {
		return err
	}
	return checkMount(ctx, diskHybBase, "/mnt/base", p.token)
}
