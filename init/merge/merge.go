// Package merge is the after-boot half of libsnapshot and update_engine's
// CleanupPreviousUpdateAction (snapshot-lifecycle.md §3.2, §5): start the
// merge of every snapshot (InitiateMerge), poll it (ProcessUpdateState →
// CheckMergeState, one LOCK_EX per poll), finish each partition in AOSP's
// order (MERGE_COMPLETED status first, collapse <P> to dm-linear in place,
// delete the handler, remove base/src/COW devices, delete the COW image and
// the status file), acknowledge the update (RemoveAllUpdateState, detach,
// daemon-alive indicator removed), resume a merge found running after a
// reboot (initiate_merge re-sent for MERGING partitions), and cancel an
// update the device rolled back from (source slot + rollback-indicator).
package merge

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/vabc-go/vabc/init/bootctl"
	"github.com/vabc-go/vabc/init/firststage"
	"github.com/vabc-go/vabc/init/stack"
	"github.com/vabc-go/vabc/init/state"
	"github.com/vabc-go/vabc/snapuserd/client"
	"github.com/vabc-go/vabc/snapuserd/proto"
)

// Config describes the running device.
type Config struct {
	Dir      state.Dir
	Suffix   string // current slot suffix
	Table    stack.Table
	ImageDir string
	B        *stack.Builder
	Socket   string        // snapuserd control socket
	Misc     *bootctl.Misc // nil: no boot-control HAL
	Poll     time.Duration // 0: 2 s (AOSP)
	// Progress, when set, is called after every poll while merging.
	Progress func(percent float64)
	Log      *slog.Logger
}

func (c *Config) logf(msg string, args ...any) {
	if c.Log != nil {
		c.Log.Info(msg, args...)
	}
}

func (c *Config) slot() int {
	s, _ := bootctl.SlotOf(c.Suffix)
	return s
}

// hal reports a merge status to boot control.
func (c *Config) hal(s bootctl.MergeStatus) error {
	if c.Misc == nil {
		return nil
	}
	return c.Misc.SetMergeStatus(c.slot(), s)
}

// writeState writes the global state with the HAL report in AOSP's order:
// MERGING before Merging/MergeFailed, NONE after None/MergeNeedsReboot.
func (c *Config) writeState(l *state.Lock, st state.UpdateState, code state.MergeFailureCode) error {
	switch st {
	case state.Merging, state.MergeFailed:
		if err := c.hal(bootctl.MergeMerging); err != nil {
			return err
		}
	}
	if err := c.Dir.WriteUpdateState(l, st, code); err != nil {
		return err
	}
	switch st {
	case state.None, state.MergeNeedsReboot, state.Initiated, state.MergeCompleted:
		return c.hal(bootctl.MergeNone)
	}
	return nil
}

// connect reaches the daemon; a missing socket (no daemon: nothing is
// mapped from snapshots) fails at once.
func (c *Config) connect(ctx context.Context) (*client.Client, error) {
	if c.Socket == "" {
		return nil, errors.New("merge: no snapuserd running")
	}
	return client.TryConnect(ctx, c.Socket, 30*time.Second)
}

// snapshots lists the snapshots of the current slot.
func (c *Config) snapshots() ([]string, error) {
	all, err := c.Dir.ListSnapshots()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range all {
		if strings.HasSuffix(n, c.Suffix) {
			out = append(out, n)
		} else {
			c.logf("snapshot of another slot skipped", "name", n)
		}
	}
	return out, nil
}

func (c *Config) partition(name string) (stack.Partition, error) {
	p, ok := c.Table.Lookup(strings.TrimSuffix(name, c.Suffix))
	if !ok {
		return p, fmt.Errorf("merge: %s is not in the partition table", name)
	}
	return p, nil
}

// decidePhase is DecideMergePhase: shrunk partitions merge first.
func decidePhase(s state.SnapshotStatus) state.MergePhase {
	if s.UsingSnapuserd && s.DeviceSize < s.OldPartitionSize {
		return state.FirstPhase
	}
	return state.SecondPhase
}

// InitiateMerge starts the merge (§5.2). The state must be Unverified and
// the slot Target; writing Merging is the point of no return.
func InitiateMerge(ctx context.Context, c *Config) error {
	l, err := c.Dir.Lock(true)
	if err != nil {
		return err
	}
	defer l.Unlock()
	cur, err := c.Dir.ReadUpdateStatus()
	if err != nil {
		return err
	}
	if cur.State != state.Unverified {
		return fmt.Errorf("merge: InitiateMerge in state %v, want Unverified", cur.State)
	}
	if cl, err := firststage.Classify(c.Dir, c.Suffix); err != nil || cl != firststage.Target {
		return fmt.Errorf("merge: InitiateMerge on a %v slot (%v)", cl, err)
	}
	names, err := c.snapshots()
	if err != nil {
		return err
	}
	var first, all []state.SnapshotStatus
	for _, n := range names {
		if err := c.B.Exists(n); err != nil {
			return fmt.Errorf("merge: snapshot %s has no device: %w", n, err)
		}
		s, err := c.Dir.ReadSnapshot(n)
		if err != nil {
			return err
		}
		cur.UsingSnapuserd = cur.UsingSnapuserd || s.UsingSnapuserd
		all = append(all, s)
		if decidePhase(s) == state.FirstPhase {
			first = append(first, s)
		}
	}
	group := all
	cur.State, cur.MergePhase = state.Merging, state.SecondPhase
	if len(first) > 0 {
		group, cur.MergePhase = first, state.FirstPhase
	}
	if err := c.hal(bootctl.MergeMerging); err != nil {
		return err
	}
	if err := c.Dir.WriteUpdateStatus(l, cur); err != nil {
		return err
	}
	c.logf("merge initiated", "phase", cur.MergePhase, "partitions", len(group))
	cl, err := c.connect(ctx)
	if err != nil {
		return c.writeState(l, state.MergeFailed, state.FailUnknownTable)
	}
	defer cl.Close()
	var failed bool
	for _, s := range group {
		if err := switchToMerge(c, l, cl, s); err != nil {
			c.logf("initiate_merge failed", "partition", s.Name, "err", err)
			failed = true
		}
	}
	if failed {
		return c.writeState(l, state.MergeFailed, state.FailUnknownTable)
	}
	return nil
}

// switchToMerge is SwitchSnapshotToMerge: initiate_merge, then MERGING.
func switchToMerge(c *Config, l *state.Lock, cl *client.Client, s state.SnapshotStatus) error {
	// A hybrid table's idle plan must not be live while the merge writes the base.
	if err := c.B.PrepareMerge(s.Name, s.DeviceSize/512); err != nil {
		return err
	}
	if err := cl.InitiateMerge(s.Name); err != nil {
		return err
	}
	if s.State == state.SnapshotCreated {
		s.State = state.SnapshotMerging
		return c.Dir.WriteSnapshot(l, s)
	}
	return nil
}

// result of one partition in a poll (§5.4).
type result int

const (
	rMerging result = iota
	rCompleted
	rNeedsReboot
	rFailed
	rWrongPhase
	rCancelled
)

// Once is one CheckMergeState poll (§5.3) under LOCK_EX.
func Once(ctx context.Context, c *Config) (state.UpdateState, error) {
	l, err := c.Dir.Lock(true)
	if err != nil {
		return state.MergeFailed, err
	}
	defer l.Unlock()
	cur, err := c.Dir.ReadUpdateStatus()
	if err != nil {
		return state.MergeFailed, err
	}
	switch cur.State {
	case state.None:
		return state.None, nil
	case state.MergeCompleted:
		return state.MergeCompleted, acknowledge(ctx, c, l)
	case state.Unverified:
		return handleCancelled(c, l)
	case state.Cancelled:
		return state.Cancelled, removeAll(c, l)
	case state.Merging, state.MergeNeedsReboot, state.MergeFailed:
	default:
		return cur.State, nil
	}
	names, err := c.snapshots()
	if err != nil {
		return state.MergeFailed, ack(c, l, state.FailListSnapshots)
	}
	cl, cerr := c.connect(ctx)
	if cerr == nil {
		defer cl.Close()
	}
	var merging, failed, wrong, reboot, cancelled bool
	code := state.FailOk
	for _, n := range names {
		r, fc := checkTarget(c, l, cl, cerr, cur, n)
		switch r {
		case rMerging:
			merging = true
		case rFailed:
			failed = true
			if code == state.FailOk {
				code = fc
			}
		case rWrongPhase:
			wrong = true
		case rNeedsReboot:
			reboot = true
		case rCancelled:
			cancelled = true
		}
	}
	switch {
	case merging:
		return state.Merging, nil
	case failed:
		return state.MergeFailed, ack(c, l, code)
	case wrong:
		return state.Merging, secondPhase(c, l, cl, cerr, cur)
	case reboot:
		return state.MergeNeedsReboot, c.writeState(l, state.MergeNeedsReboot, state.FailOk)
	case cancelled:
		return state.Cancelled, removeAll(c, l)
	}
	return state.MergeCompleted, acknowledge(ctx, c, l)
}

// ack is AcknowledgeMergeFailure: only while Merging or MergeNeedsReboot.
func ack(c *Config, l *state.Lock, code state.MergeFailureCode) error {
	cur, err := c.Dir.ReadUpdateStatus()
	if err != nil {
		return err
	}
	if cur.State != state.Merging && cur.State != state.MergeNeedsReboot {
		return nil
	}
	return c.writeState(l, state.MergeFailed, code)
}

func secondPhase(c *Config, l *state.Lock, cl *client.Client, cerr error, cur state.UpdateStatus) error {
	if cerr != nil {
		return cerr
	}
	cur.State, cur.MergePhase = state.Merging, state.SecondPhase
	if err := c.Dir.WriteUpdateStatus(l, cur); err != nil {
		return err
	}
	names, err := c.snapshots()
	if err != nil {
		return err
	}
	for _, n := range names {
		s, err := c.Dir.ReadSnapshot(n)
		if err != nil {
			return err
		}
		if s.State == state.SnapshotCreated && decidePhase(s) == state.SecondPhase {
			if err := switchToMerge(c, l, cl, s); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkTarget is CheckTargetMergeState for one partition (§5.4).
func checkTarget(c *Config, l *state.Lock, cl *client.Client, cerr error, cur state.UpdateStatus, name string) (result, state.MergeFailureCode) {
	s, err := c.Dir.ReadSnapshot(name)
	if err != nil {
		return rFailed, state.FailReadStatus
	}
	isUser, err := c.B.IsUser(name)
	if err != nil {
		isUser = false
	}
	if !isUser {
		if s.State == state.SnapshotMergeCompleted {
			if err := complete(c, l, cl, s); err != nil {
				c.logf("cleanup retry failed", "partition", name, "err", err)
			}
			return rCompleted, state.FailOk
		}
		if _, err := c.partition(name); err != nil {
			c.Dir.DeleteSnapshot(l, name)
			return rCancelled, state.FailOk
		}
		return rFailed, state.FailUnknownTargetType
	}
	if cerr != nil {
		return rFailed, state.FailQuerySnapshotStatus
	}
	st, err := cl.QuerySnapshotStatus(name)
	if err != nil {
		return rFailed, state.FailQuerySnapshotStatus
	}
	switch st {
	case proto.StatusMergeFailed:
		return rFailed, state.FailUnknownTargetType
	case proto.StatusSnapshot:
		if s.State == state.SnapshotMerging {
			// The daemon restarted after a reboot: resume (a hybrid table first
			// gets its merging plan).
			if err := c.B.PrepareMerge(name, s.DeviceSize/512); err != nil {
				c.logf("hybrid table not prepared for the merge", "partition", name, "err", err)
				return rFailed, state.FailUnknownTargetType
			}
			if err := cl.InitiateMerge(name); err != nil {
				return rFailed, state.FailUnknownTargetType
			}
			c.logf("merge resumed", "partition", name)
			return rMerging, state.FailOk
		}
		if decidePhase(s) == state.SecondPhase && cur.MergePhase == state.FirstPhase {
			return rWrongPhase, state.FailOk
		}
		if err := switchToMerge(c, l, cl, s); err != nil {
			return rFailed, state.FailUnknownTargetType
		}
		return rMerging, state.FailOk
	case proto.StatusMerge:
		if s.State == state.SnapshotMergeCompleted {
			return rFailed, state.FailUnmergedSectors
		}
		// Committed blocks of a hybrid table move from the daemon to <P>-base. A failed
		// reload leaves the previous merging plan live, which stays correct.
		if err := c.B.Replan(name, s.DeviceSize/512); err != nil {
			c.logf("hybrid table not re-planned", "partition", name, "err", err)
		}
		return rMerging, state.FailOk
	case proto.StatusMergeComplete:
		s.State = state.SnapshotMergeCompleted
		if err := c.Dir.WriteSnapshot(l, s); err != nil {
			return rFailed, state.FailWriteStatus
		}
		if err := complete(c, l, cl, s); err != nil {
			c.logf("merge cleanup failed", "partition", name, "err", err)
			return rNeedsReboot, state.FailOk
		}
		return rCompleted, state.FailOk
	}
	return rFailed, state.FailExpectedMergeTarget
}

// complete is OnSnapshotMergeComplete (§5.5 steps 2–5); s already says
// MERGE_COMPLETED on disk.
func complete(c *Config, l *state.Lock, cl *client.Client, s state.SnapshotStatus) error {
	p, err := c.partition(s.Name)
	if err != nil {
		return err
	}
	if isUser, _ := c.B.IsUser(s.Name); isUser {
		if err := c.B.Collapse(s.Name, p, s.DeviceSize/512); err != nil {
			return err
		}
		if cl == nil {
			return errors.New("merge: no daemon connection to delete the handler")
		}
		if err := cl.WaitForDeviceDelete(s.Name); err != nil {
			return err
		}
	}
	img := stack.ImagePath(c.ImageDir, s.Name)
	if err := c.B.RemoveBacking(s.Name, img); err != nil {
		return err
	}
	if err := removeImage(img); err != nil {
		return err
	}
	c.logf("partition merged and collapsed", "partition", s.Name)
	return c.Dir.DeleteSnapshot(l, s.Name)
}

func removeImage(img string) error {
	if err := os.Remove(img); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	d, err := os.Open(strings.TrimSuffix(img, "/"+lastElem(img)))
	if err != nil {
		return nil // directory gone: nothing to sync
	}
	defer d.Close()
	return d.Sync()
}

func lastElem(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

// acknowledge is AcknowledgeMergeSuccess (§5.6): everything removed, state
// None, the daemon detached, the daemon-alive indicator removed.
func acknowledge(ctx context.Context, c *Config, l *state.Lock) error {
	if err := removeAll(c, l); err != nil {
		return err
	}
	if cl, err := c.connect(ctx); err == nil {
		cl.DetachSnapuserd()
		cl.Close()
	}
	return c.Dir.Remove(state.DaemonAliveIndicator)
}

// removeAll is RemoveAllUpdateState: snapshots not mapped here are
// deleted with their COW images, then the files and state None.
func removeAll(c *Config, l *state.Lock) error {
	names, err := c.Dir.ListSnapshots()
	if err != nil {
		return err
	}
	for _, n := range names {
		if isUser, _ := c.B.IsUser(n); isUser {
			return fmt.Errorf("merge: snapshot %s is still mapped", n)
		}
		c.B.RemoveBacking(n, stack.ImagePath(c.ImageDir, n))
		if err := removeImage(stack.ImagePath(c.ImageDir, n)); err != nil {
			return err
		}
	}
	if err := c.Dir.RemoveAllUpdateState(l); err != nil {
		return err
	}
	return c.hal(bootctl.MergeNone)
}

// handleCancelled is HandleCancelledUpdate (T6) for state Unverified.
func handleCancelled(c *Config, l *state.Lock) (state.UpdateState, error) {
	class, err := firststage.Classify(c.Dir, c.Suffix)
	if err != nil {
		return state.Unverified, err
	}
	if class != firststage.Source || !c.Dir.Exists(state.RollbackIndicator) {
		return state.Unverified, nil
	}
	c.logf("update cancelled: booted the source slot after the update (rollback)")
	return state.Cancelled, removeAll(c, l)
}

// Run is update_engine's CleanupPreviousUpdateAction after boot completed
// and the slot was marked successful: poll, InitiateMerge when Unverified
// on the target slot, until the update is gone or failed. It returns the
// final state.
func Run(ctx context.Context, c *Config) (state.UpdateState, error) {
	poll := c.Poll
	if poll == 0 {
		poll = 2 * time.Second
	}
	initiated := false
	for {
		st, err := Once(ctx, c)
		if err != nil {
			return st, err
		}
		switch st {
		case state.Unverified:
			class, _ := firststage.Classify(c.Dir, c.Suffix)
			if class != firststage.Target || initiated {
				return st, nil
			}
			if err := InitiateMerge(ctx, c); err != nil {
				return st, err
			}
			initiated = true
			continue
		case state.Merging:
			if c.Progress != nil {
				if cl, err := c.connect(ctx); err == nil {
					if pct, err := cl.GetMergePercent(); err == nil {
						c.Progress(pct)
					}
					cl.Close()
				}
			}
		case state.MergeCompleted:
			if c.Misc != nil {
				c.Misc.SetUnbootable(1 - c.slot())
			}
			return st, nil
		case state.MergeFailed, state.MergeNeedsReboot:
			return st, fmt.Errorf("merge: %v", st)
		default:
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(poll):
		}
	}
}
