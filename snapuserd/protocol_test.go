package snapuserd_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/proto"
)

// TestMergePercentAfterDelete: a partition whose merge completed keeps
// counting as 100 % in merge_percent after its handler is deleted, as AOSP's
// num_partitions_merge_complete_ does.
func TestMergePercentAfterDelete(t *testing.T) {
	pairs := sameSizePairs(51, 300)
	dir := t.TempDir()
	a := newVABPart(t, dir, "system", pairs["shuffled"], 3, false)
	b := newVABPart(t, dir, "vendor", pairs["shifted"], 2, false)
	fe := &snapuserd.EmulatedDmUser{Workers: 1}
	m := newMergeManager(fe, snapuserd.MergeConfig{})
	defer m.Shutdown()
	for _, p := range []vabPart{a, b} {
		if _, err := m.InitHandler(proto.InitRequest{Misc: p.misc, Cow: p.cow, Backing: p.base, BasePath: p.base}); err != nil {
			t.Fatal(err)
		}
		if err := m.StartHandler(p.misc); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.InitiateMerge(a.misc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "system merge", func() bool { return m.MergeStatus(a.misc) == proto.StatusMergeComplete })
	if err := m.DeleteHandler(a.misc); err != nil {
		t.Fatal(err)
	}
	if pct := m.MergePercent(); pct != 100 {
		t.Fatalf("merge_percent with one completed, deleted partition: %v, want 100", pct)
	}
	m.PauseMerge()
	if err := m.InitiateMerge(b.misc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "vendor to park", func() bool { p, _ := m.MergeProgress(b.misc); return p.Parked })
	if pct := m.MergePercent(); pct != 50 {
		t.Fatalf("merge_percent: %v, want (1×100 + 0) / 2 = 50", pct)
	}
	m.ResumeMerge()
	waitFor(t, "vendor merge", func() bool { return m.MergeStatus(b.misc) == proto.StatusMergeComplete })
	if pct := m.MergePercent(); pct != 100 {
		t.Fatalf("merge_percent after both: %v", pct)
	}
}

// TestInitiateMergeRetryAfterFailedPrepare: when the merge cannot be
// prepared, initiate_merge fails, and so does every retry; getstatus says
// snapshot-merge-failed throughout.
func TestInitiateMergeRetryAfterFailedPrepare(t *testing.T) {
	pair := sameSizePairs(52, 64)["random"]
	p := newVABPart(t, t.TempDir(), "system", pair, 3, false)
	cowB, err := os.ReadFile(p.cow)
	if err != nil {
		t.Fatal(err)
	}
	fe := &snapuserd.EmulatedDmUser{Workers: 1}
	m := snapuserd.NewManager(snapuserd.Config{Frontend: fe, Open: func(proto.InitRequest) (snapuserd.Device, error) {
		// No merge files: PrepareMerge fails.
		return snapuserd.NewSnapshot(p.misc, bytes.NewReader(cowB), int64(len(cowB)), bytes.NewReader(pair.Source), bytes.NewReader(pair.Source), int64(len(pair.Source)), "system.cow")
	}})
	defer m.Shutdown()
	if _, err := m.InitHandler(proto.InitRequest{Misc: p.misc, Cow: "c", Backing: "b", BasePath: "b"}); err != nil {
		t.Fatal(err)
	}
	if err := m.StartHandler(p.misc); err != nil {
		t.Fatal(err)
	}
	for try := range 3 {
		if err := m.InitiateMerge(p.misc); err == nil {
			t.Fatalf("initiate_merge try %d succeeded", try)
		}
		if st := m.MergeStatus(p.misc); st != proto.StatusMergeFailed {
			t.Fatalf("status after try %d: %q", try, st)
		}
	}
}
