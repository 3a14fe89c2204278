package stack

import (
	"fmt"
	"path/filepath"

	"github.com/vabc-go/vabc/init/state"
	"github.com/vabc-go/vabc/kernel/dm"
)

// Device-mapper names of one snapshotted partition P (§4.4).
func BaseName(p string) string     { return p + "-base" }
func CowImageName(p string) string { return p + "-cow-img" }
func SrcName(p string) string      { return p + "-src" }

// MiscName is the dm-user misc name: P, with "-init" in first-stage init.
func MiscName(p string, firstStage bool) string {
	if firstStage {
		return p + "-init"
	}
	return p
}

// ImagePath is where the COW image of P lives (libfiemap's file name).
func ImagePath(imageDir, p string) string { return filepath.Join(imageDir, p+"-cow-img.img") }

// LinearTargets maps the first sectors of p as dm-linear segments.
func LinearTargets(p Partition, sectors uint64) ([]dm.Target, error) {
	if sectors > p.Sectors() {
		return nil, fmt.Errorf("stack: %s needs %d sectors, the partition has %d", p.Name, sectors, p.Sectors())
	}
	var ts []dm.Target
	var at uint64
	for _, e := range p.Extents {
		if at == sectors {
			break
		}
		n := min(e.Sectors, sectors-at)
		ts = append(ts, dm.Linear(at, n, e.Disk, e.Start))
		at += n
	}
	return ts, nil
}

// Snapshot is the planned stack of one partition with a live snapshot.
type Snapshot struct {
	Name            string // P, slot-suffixed
	Misc            string
	Sectors         uint64 // of <P>-base and of the dm-user device
	Base            []dm.Target
	Src             []dm.Target // nil: the source is <P>-base
	CowImage        string      // COW image file
	CowImageSectors uint64
}

// LiveSnapshot reports whether st describes a snapshot first stage must map
// (§4.3 step 2): not NONE, not MERGE_COMPLETED, some COW space.
func LiveSnapshot(st state.SnapshotStatus) bool {
	return st.State != state.SnapshotNone && st.State != state.SnapshotMergeCompleted &&
		st.CowPartitionSize+st.CowFileSize > 0
}

// PlanSnapshot checks st against the partition and plans its stack.
// suffixed is P (e.g. system_b); p is its profile entry.
func PlanSnapshot(p Partition, suffixed string, st state.SnapshotStatus, imageDir string, firstStage bool) (Snapshot, error) {
	bad := func(f string, a ...any) (Snapshot, error) {
		return Snapshot{}, fmt.Errorf("stack: snapshot %s: "+f, append([]any{suffixed}, a...)...)
	}
	if !LiveSnapshot(st) {
		return bad("state %v with %d+%d COW bytes is not a live snapshot", st.State, st.CowPartitionSize, st.CowFileSize)
	}
	if !st.UsingSnapuserd {
		return bad("using_snapuserd is false: kernel dm-snapshot mode is not supported")
	}
	if st.DeviceSize == 0 || st.DeviceSize%512 != 0 || st.SnapshotSize != st.DeviceSize {
		return bad("device_size %d / snapshot_size %d: want equal, non-zero multiples of 512", st.DeviceSize, st.SnapshotSize)
	}
	if st.CowPartitionSize != 0 {
		return bad("cow_partition_size %d: the VM profile has no COW space in super", st.CowPartitionSize)
	}
	if st.CowFileSize%512 != 0 {
		return bad("cow_file_size %d is not a multiple of 512", st.CowFileSize)
	}
	sectors := st.DeviceSize / 512
	base, err := LinearTargets(p, sectors)
	if err != nil {
		return Snapshot{}, err
	}
	s := Snapshot{Name: suffixed, Misc: MiscName(suffixed, firstStage), Sectors: sectors, Base: base,
		CowImage: ImagePath(imageDir, suffixed), CowImageSectors: st.CowFileSize / 512}
	if st.OldPartitionSize > 0 {
		if st.OldPartitionSize%512 != 0 {
			return bad("old_partition_size %d is not a multiple of 512", st.OldPartitionSize)
		}
		// In place: the other slot's partition has the same extents.
		if s.Src, err = LinearTargets(p, st.OldPartitionSize/512); err != nil {
			return Snapshot{}, err
		}
	}
	return s, nil
}
