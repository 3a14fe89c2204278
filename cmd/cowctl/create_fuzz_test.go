package main

import (
	"strconv"
	"testing"
)

// FuzzParseFactor: parseFactor accepts exactly the powers of two from 4 KiB
// to 256 KiB, and what it accepts prints back to the same value.
func FuzzParseFactor(f *testing.F) {
	for _, s := range []string{"4K", "64K", "256k", "65536", "48K", "512K", "", "K", "-4K", "4KiB", "18446744073709551616"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseFactor(s)
		if err != nil {
			if !isToolUsage(err) {
				t.Fatalf("%q: %v is not a usage error", s, err)
			}
			return
		}
		if v < 4096 || v > 256<<10 || v&(v-1) != 0 {
			t.Fatalf("%q accepted as %d", s, v)
		}
		if back, err := parseFactor(strconv.Itoa(int(v))); err != nil || back != v {
			t.Fatalf("%d does not round-trip: %d %v", v, back, err)
		}
	})
}
