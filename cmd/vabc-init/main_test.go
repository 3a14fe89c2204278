package main

import (
	"testing"
	"time"
)

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want opts
	}{
		{"console=ttyS0 quiet", opts{tries: 6, poll: 200 * time.Millisecond}},
		{"vabc.apply=1 vabc.tries=2 vabc.poll=50", opts{apply: true, tries: 2, poll: 50 * time.Millisecond}},
		{"vabc.hybrid=1", opts{hybrid: true, tries: 6, poll: 200 * time.Millisecond}},
		{"vabc.badbuild=1 vabc.tries=9 vabc.poll=-1", opts{badBuild: true, tries: 6, poll: 200 * time.Millisecond}}, // out of range: defaults
	} {
		if got := parseCmdline(tc.in); got != tc.want {
			t.Errorf("%q: %+v, want %+v", tc.in, got, tc.want)
		}
	}
}
