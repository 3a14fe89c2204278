package puffin

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func TestAOSPSamples(t *testing.T) {
	for _, s := range []struct {
		name    string
		data    []byte
		defl    []BitExtent
		puffed  []byte
		puffExt []ByteExtent
	}{
		{"sample1", deflatesSample1, subblocksSample1, puffsSample1, puffExtentsSample1},
		{"sample2", deflatesSample2, subblocksSample2, puffsSample2, puffExtentsSample2},
	} {
		t.Run(s.name, func(t *testing.T) {
			puffed, puffs, err := PuffStream(s.data, s.defl)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(puffed, s.puffed) || fmt.Sprint(puffs) != fmt.Sprint(s.puffExt) {
				t.Fatalf("puffed %x %v\nwant   %x %v", puffed, puffs, s.puffed, s.puffExt)
			}
			back, err := HuffStream(s.puffed, s.defl, s.puffExt)
			if err != nil || !bytes.Equal(back, s.data) {
				t.Fatalf("huffed %x, %v", back, err)
			}
		})
	}
	// crbug.com/915559: puffs as AOSP says, and Locate keeps it out of new
	// patches (an old client would fail to puff it).
	puffed, puffs, err := PuffStream(problematicCache, problematicCacheDeflates)
	if err != nil {
		t.Fatal(err)
	}
	if puffs[0] != problematicCachePuffs[0] {
		t.Fatalf("problematic cache puffs to %v, want %v", puffs, problematicCachePuffs)
	}
	if back, err := HuffStream(puffed, problematicCacheDeflates, puffs); err != nil || !bytes.Equal(back, problematicCache) {
		t.Fatalf("problematic cache huffs back wrong: %v", err)
	}
	d := problematicCacheDeflates[0]
	if aospSafe(problematicCache, d.Offset, d.end()) {
		t.Fatal("the crbug 915559 deflate is reported safe for old AOSP clients")
	}
}

func TestApplyAOSPPatches(t *testing.T) {
	for _, c := range []struct {
		name       string
		src, patch []byte
		want       []byte
	}{
		{"1to2", deflatesSample1, patch1To2, deflatesSample2},
		{"2to1", deflatesSample2, patch2To1, deflatesSample1},
		{"1toEmpty", deflatesSample1, patch1ToEmpty, []byte{}},
		{"1toNoDeflate", deflatesSample1, patch1ToNoDeflate, []byte{11, 22, 33, 44}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Apply(c.src, c.patch, int64(len(c.want)), 0)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, c.want) {
				t.Fatalf("got %x, want %x", got, c.want)
			}
			// Our header encoder writes AOSP's header bytes.
			h, err := ParseHeader(c.patch)
			if err != nil {
				t.Fatal(err)
			}
			enc := h.Encode(c.patch[h.InnerOffset:])
			if !bytes.Equal(enc, c.patch) {
				t.Fatalf("re-encoded header\n got %x\nwant %x", enc[:h.InnerOffset], c.patch[:h.InnerOffset])
			}
		})
	}
}

func TestDiffApply(t *testing.T) {
	for _, c := range []struct {
		name     string
		src, dst []byte
		sd, dd   []BitExtent
	}{
		{"1to2", deflatesSample1, deflatesSample2, subblocksSample1, subblocksSample2},
		{"2to1", deflatesSample2, deflatesSample1, subblocksSample2, subblocksSample1},
		{"gap", gapDeflates, deflatesSample1, gapDeflateExtents, subblocksSample1},
	} {
		patch, err := Diff(c.src, c.dst, c.sd, c.dd, DiffOptions{})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got, err := Apply(c.src, patch, int64(len(c.dst)), 0)
		if err != nil || !bytes.Equal(got, c.dst) {
			t.Fatalf("%s: %x, %v", c.name, got, err)
		}
	}
}

func TestApplyRejects(t *testing.T) {
	h, _ := ParseHeader(patch1To2)
	h.Type = PatchZucchini
	if _, err := Apply(deflatesSample1, h.Encode(patch1To2[h.InnerOffset:]), -1, 1<<20); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("zucchini: %v", err)
	}
	if _, err := Apply(deflatesSample1, patch1To2, int64(len(deflatesSample2))+1, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong size: %v", err)
	}
	if _, err := Apply(deflatesSample2, patch1To2, int64(len(deflatesSample2)), 0); err == nil {
		t.Fatal("applied to the wrong source")
	}
	for i := 0; i < len(patch1To2); i++ {
		p := bytes.Clone(patch1To2)
		p[i] ^= 0x41
		got, err := Apply(deflatesSample1, p, -1, 1<<20)
		if err == nil && bytes.Equal(got, deflatesSample2) && i < h.InnerOffset {
			// a flipped header bit that does not matter is fine
			continue
		}
	}
}
