package stack

import (
	"strings"
	"testing"

	"github.com/vabc-go/vabc/init/state"
)

func TestParseTable(t *testing.T) {
	tab, err := ParseTable("# profile\nsystem /dev/vda 0 100\nvendor /dev/vda 100 50\nsystem /dev/vda 200 28\n")
	if err != nil {
		t.Fatal(err)
	}
	p, ok := tab.Lookup("system")
	if !ok || p.Sectors() != 128 || len(p.Extents) != 2 {
		t.Fatalf("system: %+v", p)
	}
	again, err := ParseTable(tab.String())
	if err != nil || again.String() != tab.String() {
		t.Fatalf("round trip: %v\n%s", err, again)
	}
	for _, bad := range []string{"system /dev/vda 0", "system_a /dev/vda 0 8", "system /dev/vda x 8", "system /dev/vda 0 0",
		"system /dev/vda 18446744073709551615 2"} {
		if _, err := ParseTable(bad); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestPlanSnapshot(t *testing.T) {
	p := Partition{Name: "system", Extents: []Extent{{"/dev/vda", 2048, 100}, {"/dev/vda", 4096, 100}}}
	st := state.SnapshotStatus{Name: "system_b", State: state.SnapshotMerging, DeviceSize: 150 * 512, SnapshotSize: 150 * 512,
		CowFileSize: 8 * 512, UsingSnapuserd: true, OldPartitionSize: 120 * 512}
	s, err := PlanSnapshot(p, "system_b", st, "/data/gsi/ota", true)
	if err != nil {
		t.Fatal(err)
	}
	if s.Misc != "system_b-init" || s.Sectors != 150 || s.CowImage != "/data/gsi/ota/system_b-cow-img.img" || s.CowImageSectors != 8 {
		t.Fatalf("%+v", s)
	}
	if got := s.Base[0].String() + "|" + s.Base[1].String(); got != "0 100 linear /dev/vda 2048|100 50 linear /dev/vda 4096" {
		t.Fatalf("base table %s", got)
	}
	if len(s.Src) != 2 || s.Src[1].String() != "100 20 linear /dev/vda 4096" {
		t.Fatalf("src table %v", s.Src)
	}
	for name, mut := range map[string]func(*state.SnapshotStatus){
		"completed":    func(s *state.SnapshotStatus) { s.State = state.SnapshotMergeCompleted },
		"too big":      func(s *state.SnapshotStatus) { s.DeviceSize, s.SnapshotSize = 300*512, 300*512 },
		"size differs": func(s *state.SnapshotStatus) { s.SnapshotSize = 512 },
		"no cow":       func(s *state.SnapshotStatus) { s.CowFileSize = 0 },
		"odd cow":      func(s *state.SnapshotStatus) { s.CowFileSize = 513 },
		"super cow":    func(s *state.SnapshotStatus) { s.CowPartitionSize = 512 },
		"dm-snapshot":  func(s *state.SnapshotStatus) { s.UsingSnapuserd = false },
		"old too big":  func(s *state.SnapshotStatus) { s.OldPartitionSize = 201 * 512 },
	} {
		c := st
		mut(&c)
		if _, err := PlanSnapshot(p, "system_b", c, "/d", false); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
