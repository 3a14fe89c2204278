// Package update is the install side of libsnapshot used on the device
// while the old system runs (snapshot-lifecycle.md §3.2 T1–T3, §6.1):
// BeginUpdate, the snapshot status files of CreateUpdateSnapshots, and
// FinishedSnapshotWrites. Every step holds the exclusive flock on D.
//
// Order differs from AOSP in one point: AOSP sizes and creates the COW
// storage before writing it; here the COW image file is written first (by
// update_engine/vabc) and the status files record its final size.
package update

import (
	"fmt"

	"github.com/vabc-go/vabc/init/state"
)

// Begin is BeginUpdate: the state must be None (or Initiated: an install
// being redone); it becomes Initiated with the source fingerprint. A state
// with a merge pending or a finished install refuses.
func Begin(d state.Dir, fingerprint string) error {
	if err := d.Ensure(); err != nil {
		return err
	}
	l, err := d.Lock(true)
	if err != nil {
		return err
	}
	defer l.Unlock()
	cur, err := d.ReadUpdateStatus()
	if err != nil {
		return err
	}
	switch cur.State {
	case state.None, state.Initiated, state.Cancelled:
	default:
		return fmt.Errorf("update: state is %v: finish or cancel that update first", cur.State)
	}
	// A fresh install: stale snapshot files of an abandoned install go.
	names, err := d.ListSnapshots()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := d.DeleteSnapshot(l, n); err != nil {
			return err
		}
	}
	return d.WriteUpdateStatus(l, state.UpdateStatus{State: state.Initiated, SourceBuildFingerprint: fingerprint})
}

// CreateSnapshots writes one CREATED status file per snapshot and rewrites
// the state with the feature fields (using_snapuserd, userspace_snapshots,
// legacy_snapuserd false). The state must be Initiated.
func CreateSnapshots(d state.Dir, snaps []state.SnapshotStatus) error {
	l, err := d.Lock(true)
	if err != nil {
		return err
	}
	defer l.Unlock()
	cur, err := d.ReadUpdateStatus()
	if err != nil {
		return err
	}
	if cur.State != state.Initiated {
		return fmt.Errorf("update: CreateSnapshots in state %v, want Initiated", cur.State)
	}
	for _, s := range snaps {
		s.State = state.SnapshotCreated
		if s.DeviceSize%512 != 0 || s.CowFileSize%512 != 0 || s.CowPartitionSize%512 != 0 || s.SnapshotSize%512 != 0 {
			return fmt.Errorf("update: snapshot %s: sizes must be multiples of 512 (%d, %d, %d, %d)", s.Name,
				s.DeviceSize, s.SnapshotSize, s.CowPartitionSize, s.CowFileSize)
		}
		if err := d.WriteSnapshot(l, s); err != nil {
			return err
		}
		cur.UsingSnapuserd = cur.UsingSnapuserd || s.UsingSnapuserd
	}
	cur.UserspaceSnapshots = true
	cur.LegacySnapuserd = false
	return d.WriteUpdateStatus(l, cur)
}

// Finished is FinishedSnapshotWrites(wipe): allow-forward-merge written or
// removed, rollback-indicator removed, snapshot-boot := the source suffix
// (atomically), then beforeUnverified (the HAL's SNAPSHOTTED report) and the
// state Unverified. Already Unverified is a no-op.
func Finished(d state.Dir, sourceSuffix string, wipe bool, beforeUnverified func() error) error {
	l, err := d.Lock(true)
	if err != nil {
		return err
	}
	defer l.Unlock()
	cur, err := d.ReadUpdateStatus()
	if err != nil {
		return err
	}
	if cur.State == state.Unverified {
		return nil
	}
	if cur.State != state.Initiated {
		return fmt.Errorf("update: FinishedSnapshotWrites in state %v, want Initiated", cur.State)
	}
	if wipe {
		err = d.WriteIndicator(state.AllowForwardMerge)
	} else {
		err = d.Remove(state.AllowForwardMerge)
	}
	if err != nil {
		return err
	}
	if err := d.Remove(state.RollbackIndicator); err != nil {
		return err
	}
	if err := d.WriteAtomic(l, state.SnapshotBoot, []byte(sourceSuffix)); err != nil {
		return err
	}
	if beforeUnverified != nil {
		if err := beforeUnverified(); err != nil {
			return err
		}
	}
	return d.WriteUpdateState(l, state.Unverified, state.FailOk)
}
