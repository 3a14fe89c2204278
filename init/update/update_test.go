package update

import (
	"path/filepath"
	"testing"

	"github.com/vabc-go/vabc/init/state"
)

func TestInstallSequence(t *testing.T) {
	d := state.Dir{Path: filepath.Join(t.TempDir(), "ota")}
	if err := Begin(d, "vabc/old:1"); err != nil {
		t.Fatal(err)
	}
	if err := Finished(d, "_a", false, nil); err != nil {
		t.Fatal(err) // Initiated → Unverified even with no snapshots
	}
	if err := Begin(d, "x"); err == nil {
		t.Fatal("Begin over an Unverified update accepted")
	}
	d = state.Dir{Path: filepath.Join(t.TempDir(), "ota2")}
	if err := Begin(d, "vabc/old:1"); err != nil {
		t.Fatal(err)
	}
	snap := state.SnapshotStatus{Name: "system_b", DeviceSize: 8 << 20, SnapshotSize: 8 << 20, CowFileSize: 1 << 20, UsingSnapuserd: true}
	if err := CreateSnapshots(d, []state.SnapshotStatus{snap}); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteIndicator(state.RollbackIndicator); err != nil {
		t.Fatal(err)
	}
	called := false
	if err := Finished(d, "_a", false, func() error { called = true; return nil }); err != nil || !called {
		t.Fatal(err, called)
	}
	st, _ := d.ReadUpdateStatus()
	if st.State != state.Unverified || !st.UsingSnapuserd || !st.UserspaceSnapshots || st.SourceBuildFingerprint != "vabc/old:1" {
		t.Fatalf("state %+v", st)
	}
	if b, _ := d.ReadFile(state.SnapshotBoot); b != "_a" || d.Exists(state.RollbackIndicator) {
		t.Fatalf("snapshot-boot %q, rollback-indicator %v", b, d.Exists(state.RollbackIndicator))
	}
	s, err := d.ReadSnapshot("system_b")
	if err != nil || s.State != state.SnapshotCreated || s.CowFileSize != 1<<20 {
		t.Fatalf("%+v %v", s, err)
	}
	if err := CreateSnapshots(d, []state.SnapshotStatus{{Name: "x", DeviceSize: 100}}); err == nil {
		t.Fatal("CreateSnapshots after Finished accepted")
	}
}
