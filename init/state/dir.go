package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// File names under D (§2.1).
const (
	StateFile             = "state"
	SnapshotsDir          = "snapshots"
	SnapshotBoot          = "snapshot-boot"
	RollbackIndicator     = "rollback-indicator"
	AllowForwardMerge     = "allow-forward-merge"
	OldPartitionMetadata  = "old-partition-metadata"
	MergeStateFile        = "merge_state"
	BootWithoutSlotSwitch = "snapshot-boot-without-slot-switch"
	SnapuserdFromSystem   = "snapuserd-from-system"
	DaemonAliveIndicator  = "daemon-alive-indicator"
)

// DefaultDir is libsnapshot's metadata directory on a device.
const DefaultDir = "/metadata/ota"

// Dir is a metadata directory D.
type Dir struct{ Path string }

// Ensure creates D and D/snapshots (mode 0750, as init.rc does) if missing.
func (d Dir) Ensure() error {
	return os.MkdirAll(filepath.Join(d.Path, SnapshotsDir), 0o750)
}

func (d Dir) path(name string) string { return filepath.Join(d.Path, name) }

// Lock is a held flock on D (§2.5).
type Lock struct {
	f         *os.File
	exclusive bool
}

// ErrNotExclusive is returned by a writer called without LOCK_EX.
var ErrNotExclusive = errors.New("state: write needs the exclusive lock on the metadata directory")

// Lock takes flock(D) — exclusive for writers, shared for readers. The lock
// is on the directory itself, never on the state file.
func (d Dir) Lock(exclusive bool) (*Lock, error) {
	fd, err := unix.Open(d.Path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: d.Path, Err: err}
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	for {
		err = unix.Flock(fd, how)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "flock", Path: d.Path, Err: err}
	}
	return &Lock{f: os.NewFile(uintptr(fd), d.Path), exclusive: exclusive}, nil
}

// Exclusive reports whether l is a LOCK_EX.
func (l *Lock) Exclusive() bool { return l != nil && l.exclusive }

// Unlock releases the lock.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	err := l.f.Close()
	l.f = nil
	return err
}

func needExclusive(l *Lock) error {
	if !l.Exclusive() || l.f == nil {
		return ErrNotExclusive
	}
	return nil
}

// ReadUpdateStatus reads D/state. A missing or empty file is None; legacy
// text is accepted (§1.7).
func (d Dir) ReadUpdateStatus() (UpdateStatus, error) {
	b, err := os.ReadFile(d.path(StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return UpdateStatus{}, nil
	}
	if err != nil {
		return UpdateStatus{}, err
	}
	return UnmarshalUpdateStatus(b)
}

// WriteUpdateStatus writes the whole message atomically.
func (d Dir) WriteUpdateStatus(l *Lock, s UpdateStatus) error {
	if err := needExclusive(l); err != nil {
		return err
	}
	return WriteFileAtomic(d.path(StateFile), s.Marshal())
}

// WriteUpdateState is libsnapshot's WriteUpdateState: None and Initiated
// start a fresh message (Initiated keeps only the fingerprint); other states
// carry fields 5, 6, 8–14 of the current file; the failure code is written
// only with MergeFailed (§1.3 propagation rule).
func (d Dir) WriteUpdateState(l *Lock, st UpdateState, code MergeFailureCode) error {
	if err := needExclusive(l); err != nil {
		return err
	}
	cur, err := d.ReadUpdateStatus()
	if err != nil {
		return err
	}
	next := UpdateStatus{State: st}
	switch st {
	case None:
	case Initiated:
		next.SourceBuildFingerprint = cur.SourceBuildFingerprint
	default:
		next.UsingSnapuserd = cur.UsingSnapuserd
		next.MergePhase = cur.MergePhase
		next.SourceBuildFingerprint = cur.SourceBuildFingerprint
		next.UserspaceSnapshots = cur.UserspaceSnapshots
		next.IOUringEnabled = cur.IOUringEnabled
		next.LegacySnapuserd = cur.LegacySnapuserd
		next.ODirect = cur.ODirect
		next.CowOpMergeSize = cur.CowOpMergeSize
		next.NumWorkerThreads = cur.NumWorkerThreads
		if st == MergeFailed {
			next.MergeFailureCode = code
		}
	}
	return WriteFileAtomic(d.path(StateFile), next.Marshal())
}

// SnapshotPath is D/snapshots/<name>.
func (d Dir) SnapshotPath(name string) string {
	return filepath.Join(d.Path, SnapshotsDir, name)
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return fmt.Errorf("state: bad snapshot name %q", name)
	}
	return nil
}

// ReadSnapshot reads D/snapshots/<name>; when the name field differs from
// the file name, the file name wins (as in libsnapshot).
func (d Dir) ReadSnapshot(name string) (SnapshotStatus, error) {
	if err := checkName(name); err != nil {
		return SnapshotStatus{}, err
	}
	p := d.SnapshotPath(name)
	b, err := os.ReadFile(p)
	if err != nil {
		return SnapshotStatus{}, err
	}
	s, err := UnmarshalSnapshotStatus(b)
	if err != nil {
		return SnapshotStatus{}, fmt.Errorf("%s: %w", p, err)
	}
	s.Name = name
	return s, nil
}

// WriteSnapshot writes D/snapshots/<s.Name> atomically.
func (d Dir) WriteSnapshot(l *Lock, s SnapshotStatus) error {
	if err := needExclusive(l); err != nil {
		return err
	}
	if err := checkName(s.Name); err != nil {
		return err
	}
	return WriteFileAtomic(d.SnapshotPath(s.Name), s.Marshal())
}

// DeleteSnapshot removes D/snapshots/<name> and a stale <name>.tmp.
func (d Dir) DeleteSnapshot(l *Lock, name string) error {
	if err := needExclusive(l); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	if err := removeIfExists(d.SnapshotPath(name) + ".tmp"); err != nil {
		return err
	}
	if err := removeIfExists(d.SnapshotPath(name)); err != nil {
		return err
	}
	return syncDir(filepath.Join(d.Path, SnapshotsDir))
}

// ListSnapshots returns every regular file in D/snapshots (each is a
// snapshot), system_* and product_* first, the rest in name order.
func (d Dir) ListSnapshots() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(d.Path, SnapshotsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	rank := func(n string) int {
		if strings.HasPrefix(n, "system_") || strings.HasPrefix(n, "product_") {
			return 0
		}
		return 1
	}
	sort.SliceStable(names, func(i, j int) bool {
		if ri, rj := rank(names[i]), rank(names[j]); ri != rj {
			return ri < rj
		}
		return names[i] < names[j]
	})
	return names, nil
}

// Exists reports whether D/name exists.
func (d Dir) Exists(name string) bool {
	_, err := os.Lstat(d.path(name))
	return err == nil
}

// ReadFile returns the content of D/name.
func (d Dir) ReadFile(name string) (string, error) {
	b, err := os.ReadFile(d.path(name))
	return string(b), err
}

// WriteIndicator writes "1" to D/name non-atomically (rollback-indicator,
// allow-forward-merge, snapuserd-from-system, daemon-alive-indicator: only
// their existence matters).
func (d Dir) WriteIndicator(name string) error {
	return os.WriteFile(d.path(name), []byte("1"), 0o644)
}

// WriteAtomic writes D/name atomically (snapshot-boot and the like).
func (d Dir) WriteAtomic(l *Lock, name string, data []byte) error {
	if err := needExclusive(l); err != nil {
		return err
	}
	return WriteFileAtomic(d.path(name), data)
}

// Remove deletes D/name; a missing file is success.
func (d Dir) Remove(name string) error { return removeIfExists(d.path(name)) }

// RemoveAllUpdateState is the file part of libsnapshot's
// RemoveAllUpdateState: every snapshot status file, the indicator files,
// then state None. Device and COW cleanup are the caller's (before this).
func (d Dir) RemoveAllUpdateState(l *Lock) error {
	if err := needExclusive(l); err != nil {
		return err
	}
	names, err := d.ListSnapshots()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := d.DeleteSnapshot(l, n); err != nil {
			return err
		}
	}
	for _, n := range []string{SnapshotBoot, RollbackIndicator, AllowForwardMerge, OldPartitionMetadata, BootWithoutSlotSwitch, SnapuserdFromSystem} {
		if err := d.Remove(n); err != nil {
			return err
		}
	}
	return d.WriteUpdateState(l, None, FailOk)
}

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
