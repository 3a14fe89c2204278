package stack

import (
	"testing"

	"github.com/vabc-go/vabc/kernel/dm"
)

// TestHybridTableHelpers: which live tables count as hybrid, the misc name read from
// them, the retarget that renames only the dm-user segments (keeping the offsets the
// daemon is sent), and the comparison of a planned table with the kernel's.
func TestHybridTableHelpers(t *testing.T) {
	hyb := []dm.Target{
		dm.Linear(0, 16, "253:0", 0),
		{Start: 16, Length: 8, Type: "user", Params: "16 8 system_b-init"},
		dm.Zero(24, 8),
		{Start: 32, Length: 8, Type: "user", Params: "32 8 system_b-init"},
	}
	for _, tc := range []struct {
		name   string
		ts     []dm.Target
		hybrid bool
	}{
		{"hybrid", hyb, true},
		{"one dm-user target (AOSP)", []dm.Target{dm.User(0, 40, "system_b")}, false},
		{"collapsed to linear", []dm.Target{dm.Linear(0, 20, "253:0", 0), dm.Linear(20, 20, "253:1", 0)}, false},
		{"empty", nil, false},
	} {
		if got := IsHybrid(tc.ts); got != tc.hybrid {
			t.Errorf("%s: IsHybrid = %v, want %v", tc.name, got, tc.hybrid)
		}
	}
	if m, err := userMisc("system_b", hyb); err != nil || m != "system_b-init" {
		t.Errorf("userMisc = %q, %v", m, err)
	}
	if _, err := userMisc("system_b", hyb[:1]); err == nil {
		t.Error("userMisc of a table without dm-user: no error")
	}
	if _, err := userMisc("system_b", []dm.Target{{Type: "user", Params: "0 8"}}); err == nil {
		t.Error("userMisc of a malformed dm-user target: no error")
	}
	re := withMisc(hyb, "system_b")
	want := []string{"0 16 linear 253:0 0", "16 8 user 16 8 system_b", "24 8 zero ", "32 8 user 32 8 system_b"}
	for i, tg := range re {
		if tg.String() != want[i] {
			t.Errorf("retargeted %d = %q, want %q", i, tg.String(), want[i])
		}
	}
	if hyb[1].Params != "16 8 system_b-init" {
		t.Error("withMisc modified its input")
	}
	if !equalTargets(re, withMisc(hyb, "system_b")) || equalTargets(re, hyb) || equalTargets(re, re[:3]) {
		t.Error("equalTargets")
	}
	spaced := append([]dm.Target(nil), re...)
	spaced[0].Params = "253:0  0"
	if !equalTargets(re, spaced) {
		t.Error("equalTargets: parameter spacing counts")
	}
}
