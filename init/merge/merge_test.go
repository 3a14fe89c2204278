package merge

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vabc-go/vabc/init/bootctl"
	"github.com/vabc-go/vabc/init/stack"
	"github.com/vabc-go/vabc/init/state"
)

// fixture: an installed update (snapshot-boot _a, system_b snapshot with
// its COW image) on real files; no device-mapper (nothing is mapped).
func fixture(t *testing.T, st state.UpdateState, snap state.SnapshotState) (*Config, string) {
	t.Helper()
	dir := t.TempDir()
	d := state.Dir{Path: filepath.Join(dir, "ota")}
	if err := d.Ensure(); err != nil {
		t.Fatal(err)
	}
	images := filepath.Join(dir, "gsi")
	os.MkdirAll(images, 0o755)
	img := stack.ImagePath(images, "system_b")
	os.WriteFile(img, make([]byte, 4096), 0o644)
	l, _ := d.Lock(true)
	d.WriteAtomic(l, state.SnapshotBoot, []byte("_a"))
	d.WriteSnapshot(l, state.SnapshotStatus{Name: "system_b", State: snap, DeviceSize: 8192, SnapshotSize: 8192, CowFileSize: 4096, UsingSnapuserd: true})
	d.WriteUpdateStatus(l, state.UpdateStatus{State: st, UsingSnapuserd: true, UserspaceSnapshots: true})
	l.Unlock()
	miscPath := filepath.Join(dir, "misc")
	os.WriteFile(miscPath, make([]byte, 64<<10), 0o644)
	m, err := bootctl.Open(miscPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	m.SetMergeStatus(0, bootctl.MergeMerging)
	tab, _ := stack.ParseTable("system /dev/vda 0 16\n")
	return &Config{Dir: d, Table: tab, ImageDir: images, B: &stack.Builder{}, Misc: m}, img
}

func checkGone(t *testing.T, c *Config, img string) {
	t.Helper()
	if _, err := os.Stat(img); err == nil {
		t.Error("COW image left behind")
	}
	if n, _ := c.Dir.ListSnapshots(); len(n) != 0 {
		t.Errorf("snapshots left: %v", n)
	}
	if b, err := os.ReadFile(filepath.Join(c.Dir.Path, state.StateFile)); err != nil || len(b) != 0 {
		t.Errorf("state %q %v, want 0 bytes", b, err)
	}
	if c.Dir.Exists(state.SnapshotBoot) || c.Dir.Exists(state.RollbackIndicator) {
		t.Error("indicator files left")
	}
	if s, _ := c.Misc.GetMergeStatus(c.slot()); s != bootctl.MergeNone {
		t.Errorf("HAL %v, want NONE", s)
	}
}

func TestRollbackCancels(t *testing.T) {
	c, img := fixture(t, state.Unverified, state.SnapshotCreated)
	c.Suffix = "_a"
	// On the source slot without rollback-indicator: the device has not
	// rebooted since the install; nothing happens.
	if st, err := Run(t.Context(), c); err != nil || st != state.Unverified {
		t.Fatalf("before reboot: %v %v", st, err)
	}
	if _, err := os.Stat(img); err != nil {
		t.Fatal("image deleted before the rollback")
	}
	c.Dir.WriteIndicator(state.RollbackIndicator) // first stage on the source slot
	st, err := Run(t.Context(), c)
	if err != nil || st != state.Cancelled {
		t.Fatalf("rollback: %v %v", st, err)
	}
	checkGone(t, c, img)
}

func TestCompletedAfterRebootIsCleanedUp(t *testing.T) {
	// Power cut after MERGE_COMPLETED was written: the next boot maps the
	// partition plainly and the first poll finishes the cleanup.
	c, img := fixture(t, state.Merging, state.SnapshotMergeCompleted)
	c.Suffix = "_b"
	st, err := Run(t.Context(), c)
	if err != nil || st != state.MergeCompleted {
		t.Fatalf("%v %v", st, err)
	}
	checkGone(t, c, img)
}

func TestMergingWithoutDeviceFails(t *testing.T) {
	// State Merging and the snapshot still MERGING but no dm-user device:
	// MergeFailed with UnknownTargetType, nothing deleted.
	c, img := fixture(t, state.Merging, state.SnapshotMerging)
	c.Suffix = "_b"
	if st, err := Run(t.Context(), c); err == nil || st != state.MergeFailed {
		t.Fatalf("%v %v", st, err)
	}
	cur, _ := c.Dir.ReadUpdateStatus()
	if cur.State != state.MergeFailed || cur.MergeFailureCode != state.FailUnknownTargetType || !cur.UserspaceSnapshots {
		t.Fatalf("state %+v", cur)
	}
	if _, err := os.Stat(img); err != nil {
		t.Fatal("image deleted on a failed merge")
	}
}

func TestInitiateMergeNeedsTargetAndDevice(t *testing.T) {
	c, _ := fixture(t, state.Unverified, state.SnapshotCreated)
	c.Suffix = "_a"
	if err := InitiateMerge(t.Context(), c); err == nil {
		t.Fatal("InitiateMerge on the source slot accepted")
	}
	c.Suffix = "_b"
	if err := InitiateMerge(t.Context(), c); err == nil {
		t.Fatal("InitiateMerge without the snapshot device accepted")
	}
	if cur, _ := c.Dir.ReadUpdateStatus(); cur.State != state.Unverified {
		t.Fatalf("state %v after refused InitiateMerge", cur.State)
	}
}
