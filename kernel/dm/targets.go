package dm

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Target is one line of a device-mapper table: "<start> <length> <type> <params>", in
// 512-byte sectors. In status replies Params holds the target's status line instead.
type Target struct {
	Start  uint64
	Length uint64
	Type   string
	Params string
}

// String formats the target as a dmsetup table line.
func (t Target) String() string {
	return fmt.Sprintf("%d %d %s %s", t.Start, t.Length, t.Type, t.Params)
}

// Linear maps [start, start+length) to dev starting at sector offset.
func Linear(start, length uint64, dev string, offset uint64) Target {
	return Target{Start: start, Length: length, Type: "linear", Params: fmt.Sprintf("%s %d", dev, offset)}
}

// Zero returns zeros and discards writes.
func Zero(start, length uint64) Target {
	return Target{Start: start, Length: length, Type: "zero"}
}

// Error fails every I/O.
func Error(start, length uint64) Target {
	return Target{Start: start, Length: length, Type: "error"}
}

// DefaultChunkSectors is Android's dm-snapshot chunk size: 8 sectors = 4 KiB.
const DefaultChunkSectors = 8

// SnapshotParams formats "<origin> <cow> <P|N> <chunk>" as shared by snapshot and
// snapshot-merge. persistent selects "P" (on-disk exception store) over "N".
func snapshotParams(origin, cow string, persistent bool, chunkSectors uint32) string {
	mode := "N"
	if persistent {
		mode = "P"
	}
	return fmt.Sprintf("%s %s %s %d", origin, cow, mode, chunkSectors)
}

// Snapshot is the kernel's copy-on-write snapshot of origin with exceptions stored on cow.
func Snapshot(start, length uint64, origin, cow string, persistent bool, chunkSectors uint32) Target {
	return Target{Start: start, Length: length, Type: "snapshot",
		Params: snapshotParams(origin, cow, persistent, chunkSectors)}
}

// SnapshotOrigin is the origin side of an LVM-style snapshot: writes copy out first.
func SnapshotOrigin(start, length uint64, origin string) Target {
	return Target{Start: start, Length: length, Type: "snapshot-origin", Params: origin}
}

// SnapshotMerge merges the exceptions on cow back into origin.
func SnapshotMerge(start, length uint64, origin, cow string, persistent bool, chunkSectors uint32) Target {
	return Target{Start: start, Length: length, Type: "snapshot-merge",
		Params: snapshotParams(origin, cow, persistent, chunkSectors)}
}

// User forwards I/O to a userspace daemon through /dev/dm-user/<miscName> (the dm-user
// target; table parameters "<start> <length> <misc_name>" as libdm's DmTargetUser writes
// them, snapuserd.md §1).
func User(start, length uint64, miscName string) Target {
	return Target{Start: start, Length: length, Type: "user", Params: fmt.Sprintf("%d %d %s", start, length, miscName)}
}

// ParseTable parses dmsetup-style table text, one target per line.
func ParseTable(text string) ([]Target, error) {
	var ts []Target
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			return nil, fmt.Errorf("table line %d: want \"<start> <length> <type> [params]\", got %q", i+1, line)
		}
		start, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("table line %d: start %q: %w", i+1, f[0], err)
		}
		length, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("table line %d: length %q: %w", i+1, f[1], err)
		}
		ts = append(ts, Target{Start: start, Length: length, Type: f[2], Params: strings.Join(f[3:], " ")})
	}
	return ts, nil
}

// SnapshotStatus is the status of a snapshot or snapshot-merge target.
type SnapshotStatus struct {
	SectorsAllocated uint64 // COW sectors in use (header, metadata and data)
	TotalSectors     uint64 // COW device size
	MetadataSectors  uint64 // of SectorsAllocated, the header and metadata
	Invalid          bool   // "Invalid": the snapshot overflowed or failed
	Overflow         bool   // "Overflow"
	MergeFailed      bool   // "Merge failed"
}

// MergeDone reports whether a snapshot-merge has nothing left to merge: only metadata is
// allocated (vm-harness.md §12 trap 4).
func (s SnapshotStatus) MergeDone() bool {
	return !s.Invalid && !s.Overflow && !s.MergeFailed && s.SectorsAllocated == s.MetadataSectors
}

// ErrSnapshotStatus marks a status line that is not a snapshot status.
var ErrSnapshotStatus = errors.New("dm: malformed snapshot status")

// ParseSnapshotStatus parses "<sectors_allocated>/<total_sectors> <metadata_sectors>" or one
// of the kernel's failure words ("Invalid", "Overflow", "Merge failed", "Unknown").
func ParseSnapshotStatus(s string) (SnapshotStatus, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "Invalid":
		return SnapshotStatus{Invalid: true}, nil
	case "Overflow":
		return SnapshotStatus{Overflow: true}, nil
	case "Merge failed":
		return SnapshotStatus{MergeFailed: true}, nil
	}
	f := strings.Fields(s)
	if len(f) != 2 {
		return SnapshotStatus{}, fmt.Errorf("%w: %q: want \"<allocated>/<total> <metadata>\"", ErrSnapshotStatus, s)
	}
	a, t, ok := strings.Cut(f[0], "/")
	if !ok {
		return SnapshotStatus{}, fmt.Errorf("%w: %q: no '/' in %q", ErrSnapshotStatus, s, f[0])
	}
	var st SnapshotStatus
	var err error
	if st.SectorsAllocated, err = strconv.ParseUint(a, 10, 64); err != nil {
		return SnapshotStatus{}, fmt.Errorf("%w: %q: allocated: %v", ErrSnapshotStatus, s, err)
	}
	if st.TotalSectors, err = strconv.ParseUint(t, 10, 64); err != nil {
		return SnapshotStatus{}, fmt.Errorf("%w: %q: total: %v", ErrSnapshotStatus, s, err)
	}
	if st.MetadataSectors, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return SnapshotStatus{}, fmt.Errorf("%w: %q: metadata: %v", ErrSnapshotStatus, s, err)
	}
	if st.MetadataSectors > st.SectorsAllocated || st.SectorsAllocated > st.TotalSectors {
		return SnapshotStatus{}, fmt.Errorf("%w: %q: want metadata <= allocated <= total", ErrSnapshotStatus, s)
	}
	return st, nil
}

// UserStatus is the status line of vabc's dm-user module: "<channels> <outstanding> ok|lost".
type UserStatus struct {
	Channels    uint32 // open control-node channels (daemon threads)
	Outstanding uint32 // messages queued or in flight
	DaemonLost  bool   // the daemon timeout fired with no channel open
}

// ParseUserStatus parses the status line of the user target.
func ParseUserStatus(s string) (UserStatus, error) {
	f := strings.Fields(s)
	if len(f) != 3 {
		return UserStatus{}, fmt.Errorf("dm: user status %q: want \"<channels> <outstanding> ok|lost\"", s)
	}
	ch, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil {
		return UserStatus{}, fmt.Errorf("dm: user status %q: channels: %v", s, err)
	}
	out, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		return UserStatus{}, fmt.Errorf("dm: user status %q: outstanding: %v", s, err)
	}
	st := UserStatus{Channels: uint32(ch), Outstanding: uint32(out)}
	switch f[2] {
	case "ok":
	case "lost":
		st.DaemonLost = true
	default:
		return UserStatus{}, fmt.Errorf("dm: user status %q: daemon state %q is neither ok nor lost", s, f[2])
	}
	return st, nil
}
