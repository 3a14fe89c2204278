package firststage

import (
	"path/filepath"
	"reflect"
	"testing"

	"github.com/vabc-go/vabc/init/stack"
	"github.com/vabc-go/vabc/init/state"
)

func TestNeedSnapshots(t *testing.T) {
	for _, tc := range []struct {
		name      string
		boot      string // snapshot-boot content; "-" = missing
		st        state.UpdateState
		suffix    string
		want      bool
		class     Class
		indicator bool
	}{
		{"no update", "-", state.None, "_a", false, Unknown, false},
		{"empty indicator", "", state.Unverified, "_b", false, Unknown, false},
		{"target unverified", "_a", state.Unverified, "_b", true, Target, false},
		{"target merging", "_a", state.Merging, "_b", true, Target, false},
		{"target merge failed", "_a", state.MergeFailed, "_b", true, Target, false},
		{"target needs reboot", "_a", state.MergeNeedsReboot, "_b", false, Target, false},
		{"target none", "_a", state.None, "_b", false, Target, false},
		{"rollback", "_a", state.Unverified, "_a", false, Source, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := state.Dir{Path: filepath.Join(t.TempDir(), "ota")}
			d.Ensure()
			l, _ := d.Lock(true)
			if tc.boot != "-" {
				d.WriteAtomic(l, state.SnapshotBoot, []byte(tc.boot))
			}
			d.WriteUpdateStatus(l, state.UpdateStatus{State: tc.st})
			l.Unlock()
			got, class, err := NeedSnapshots(d, tc.suffix)
			if err != nil || got != tc.want || class != tc.class {
				t.Fatalf("got %v %v %v, want %v %v", got, class, err, tc.want, tc.class)
			}
			if d.Exists(state.RollbackIndicator) != tc.indicator {
				t.Fatalf("rollback-indicator exists: %v", !tc.indicator)
			}
		})
	}
}

func TestDaemonArgs(t *testing.T) {
	m := &stack.Mapped{Snapshot: stack.Snapshot{Name: "system_b", Misc: "system_b-init"}, Dev: "/dev/block/dm-4",
		Base: "/dev/block/dm-0", Src: "/dev/block/dm-3", Cow: "/dev/block/dm-1"}
	got := DaemonArgs(state.UpdateStatus{IOUringEnabled: true, CowOpMergeSize: 16, NumWorkerThreads: 3}, []*stack.Mapped{m})
	want := []string{"-no_socket", "-user_snapshot", "-io_uring", "-cow_op_merge_size=16", "-worker_count=3",
		"system_b,/dev/block/dm-1,/dev/block/dm-3,/dev/block/dm-0"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q", got)
	}
	if m.Misc != "system_b-init" {
		t.Fatal("DaemonArgs changed the mapping")
	}
}
