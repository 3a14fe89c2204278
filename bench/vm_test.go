package main

import "testing"

// TestVMMetrics: the PERF lines of run.sh's stdout and the metric lines of its stderr are
// found by name, with their fields.
func TestVMMetrics(t *testing.T) {
	stdout := "RESULT snapuserd-hybrid PASS\nPERF dmuser-read ratio=0.121 user_mib_s=97.7 linear_mib_s=805.4 size_mib=40\n" +
		"PERF dmuser-read-hybrid ratio=0.612 user_mib_s=480.0 linear_mib_s=784.0 size_mib=40 targets=9 daemon_pct=11\nvm-test took 50s\n"
	stderr := "vm-test: boot\nvm-test: metric dmuser_passthrough_read_mib_s=91.6 linear_loop_read_mib_s=509.7 ratio=0.180\n"
	m := vmMetrics(stdout, stderr)
	for _, c := range []struct{ name, key, want string }{
		{"dmuser-read", "ratio", "0.121"},
		{"dmuser-read-hybrid", "ratio", "0.612"},
		{"dmuser-read-hybrid", "daemon_pct", "11"},
		{"dmuser_passthrough_read_mib_s", "ratio", "0.180"},
	} {
		if got := m[c.name][c.key]; got != c.want {
			t.Errorf("%s %s = %q, want %q", c.name, c.key, got, c.want)
		}
	}
	if len(m) != 3 {
		t.Errorf("%d metric lines found, want 3: %v", len(m), m)
	}
}
