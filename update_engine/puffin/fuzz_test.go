package puffin

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzPuff: whatever parses as deflate must huff back to the same bits.
func FuzzPuff(f *testing.F) {
	for _, v := range smallVectors {
		f.Add(v.deflate, uint8(0))
	}
	f.Add(problematicCache, uint8(2))
	f.Add(gapDeflates, uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, start uint8) {
		s := uint64(start & 7)
		if len(data) == 0 {
			return
		}
		p, end, err := Puff(data, s)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnrepresentable) {
				t.Fatalf("unmarked error %v", err)
			}
			return
		}
		h, hend, err := Huff(p, uint(s))
		if err != nil {
			t.Fatalf("huff of a fresh puff: %v", err)
		}
		if hend != end {
			t.Fatalf("huff ends at bit %d, puff at %d", hend, end)
		}
		// compare the bits [s, end)
		for b := s; b < end; b++ {
			if (h[b/8]>>(b&7))&1 != (data[b/8]>>(b&7))&1 {
				t.Fatalf("bit %d differs", b)
			}
		}
	})
}

// FuzzHuff: arbitrary puff streams never panic, and what huffs puffs back.
func FuzzHuff(f *testing.F) {
	for _, v := range smallVectors {
		f.Add(v.puff)
	}
	f.Fuzz(func(t *testing.T, puff []byte) {
		h, end, err := Huff(puff, 0)
		if err != nil {
			return
		}
		p, pend, err := Puff(h[:(end+7)/8], 0)
		if err != nil {
			t.Fatalf("puff of a fresh huff: %v", err)
		}
		if pend != end || !bytes.Equal(p, puff) {
			// Literal runs may be split differently only if the input was
			// not canonical; the deflate bits must still agree.
			h2, _, err := Huff(p, 0)
			if err != nil || !bytes.Equal(h2, h) {
				t.Fatalf("re-huff differs")
			}
		}
	})
}

// FuzzPuffPatch: crafted patches never panic or allocate without bound.
func FuzzPuffPatch(f *testing.F) {
	f.Add(patch1To2, deflatesSample1)
	f.Add(patch2To1, deflatesSample2)
	f.Add(patch1ToEmpty, deflatesSample1)
	f.Add(patch1ToNoDeflate, deflatesSample1)
	f.Fuzz(func(t *testing.T, patch, src []byte) {
		out, err := Apply(src, patch, -1, 1<<20)
		if err == nil && len(out) > 1<<20 {
			t.Fatalf("%d-byte output past the limit", len(out))
		}
	})
}
