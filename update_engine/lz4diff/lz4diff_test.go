package lz4diff

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/vabc-go/vabc/update_engine/bsdiff"
	"github.com/vabc-go/vabc/update_engine/liblz4"
	"github.com/vabc-go/vabc/update_engine/liblz4/lz4ref"
	"github.com/vabc-go/vabc/update_engine/puffin"
)

// clusters compresses data the way mkfs.erofs does: 4 KiB physical clusters,
// each filled by destSize compression of everything left; a cluster that
// would not save space is stored.
func clusters(data []byte, algo Algorithm, level int32, pad bool) ([]byte, []Block) {
	var blob []byte
	var blocks []Block
	for off := 0; off < len(data); {
		var c []byte
		var n int
		if algo == LZ4HC {
			c, n = liblz4.CompressHCDestSize(data[off:], blockSize, int(level))
		} else {
			c, n = liblz4.CompressDestSize(data[off:], blockSize)
		}
		if n <= blockSize {
			n = min(blockSize, len(data)-off)
			blocks = append(blocks, Block{UncompressedOffset: uint64(off), UncompressedLength: uint64(n), CompressedLength: uint64(n)})
			blob = append(blob, data[off:off+n]...)
			off += n
			continue
		}
		cl := make([]byte, blockSize)
		if pad {
			copy(cl[blockSize-len(c):], c)
		} else {
			copy(cl, c)
		}
		blocks = append(blocks, Block{UncompressedOffset: uint64(off), UncompressedLength: uint64(n), CompressedLength: blockSize})
		blob = append(blob, cl...)
		off += n
	}
	return blob, blocks
}

func text(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	words := []string{"erofs ", "lz4hc ", "cluster ", "android ", "system ", "\n", "ro.build ", "0x00 "}
	var b []byte
	for len(b) < n {
		b = append(b, words[r.IntN(len(words))]...)
	}
	return b[:n]
}

func edit(b []byte, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 2))
	out := bytes.Clone(b)
	for range 5 {
		p := r.IntN(len(out) - 100)
		copy(out[p:], "EDITED")
	}
	return append(out, []byte("appended tail of the new version\n")...)
}

func roundUp(n int) int { return (n + blockSize - 1) / blockSize * blockSize }

func TestApply(t *testing.T) {
	for _, c := range []struct {
		name  string
		algo  Algorithm
		level int32
		pad   bool
	}{
		{"lz4hc9-padding", LZ4HC, 9, true},
		{"lz4hc6", LZ4HC, 6, false},
		{"lz4hc-default", LZ4HC, 0, true},
		{"lz4hc12-padding", LZ4HC, 12, true},
		{"lz4hc10", LZ4HC, 10, false},
		{"lz4hc11", LZ4HC, 11, true},
		{"lz4hc-above-max", LZ4HC, 40, true}, // liblz4 clamps to 12
		{"lz4hc-negative", LZ4HC, -3, true},  // liblz4 takes 9
		{"lz4", LZ4, 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			old, nw := text(1, 150000), edit(text(1, 150000), 3)
			sb, sbl := clusters(old, c.algo, c.level, c.pad)
			db, dbl := clusters(nw, c.algo, c.level, c.pad)
			inner, err := bsdiff.Diff(old, nw).Encode(bsdiff.Format{Ctrl: bsdiff.Brotli, Diff: bsdiff.Brotli, Extra: bsdiff.Brotli})
			if err != nil {
				t.Fatal(err)
			}
			h := &Header{Src: Info{Algo: c.algo, Level: c.level, Blocks: sbl, ZeroPadding: c.pad},
				Dst: Info{Algo: c.algo, Level: c.level, Blocks: dbl, ZeroPadding: c.pad}}
			for i := range h.Dst.Blocks {
				s := sha256.Sum256(db[i*blockSize : (i+1)*blockSize][:dbl[i].CompressedLength])
				if i%2 == 0 {
					h.Dst.Blocks[i].SHA256 = s[:]
				}
			}
			patch := h.Encode(inner)
			got, err := Apply(sb, patch)
			if err != nil {
				t.Fatal(err)
			}
			want := append(bytes.Clone(db), make([]byte, roundUp(len(db))-len(db))...)
			if !bytes.Equal(got, want) {
				t.Fatalf("output differs (%d vs %d bytes)", len(got), len(want))
			}
			// The destination clusters are what liblz4 itself makes.
			var cases []lz4ref.Case
			for _, b := range dbl {
				if b.CompressedLength < b.UncompressedLength {
					cases = append(cases, lz4ref.Case{Level: int(c.level), Target: blockSize, Src: nw[b.UncompressedOffset:]})
					if c.algo == LZ4HC && c.level == 0 {
						cases[len(cases)-1].Level = 9
					}
					if c.algo == LZ4 {
						cases[len(cases)-1].Level = 0
					}
				}
			}
			ref, _ := lz4ref.Run(t, cases)
			k := 0
			for i, b := range dbl {
				if b.CompressedLength >= b.UncompressedLength {
					continue
				}
				cl := got[i*blockSize : (i+1)*blockSize]
				r := ref[k]
				k++
				if c.pad {
					cl = cl[blockSize-len(r):]
				} else {
					cl = cl[:len(r)]
				}
				if !bytes.Equal(cl, r) {
					t.Fatalf("cluster %d differs from liblz4's", i)
				}
			}
			t.Logf("%d source / %d destination clusters, patch %d bytes", len(sbl), len(dbl), len(patch))
		})
	}
}

func TestApplyPuffdiffAndPostfix(t *testing.T) {
	mkzip := func(s string) []byte {
		var b bytes.Buffer
		w := zip.NewWriter(&b)
		for i := range 4 {
			f, _ := w.Create(fmt.Sprintf("e%d", i))
			f.Write(text(uint64(i+10), 20000))
			f.Write([]byte(s))
		}
		w.Close()
		return append(text(9, 30000), b.Bytes()...)
	}
	old, nw := mkzip("old"), mkzip("new")
	sb, sbl := clusters(old, LZ4HC, 9, true)
	db, dbl := clusters(nw, LZ4HC, 9, true)
	inner, err := puffin.Diff(old, nw, puffin.Locate(old, 1), puffin.Locate(nw, 1), puffin.DiffOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := &Header{Src: Info{Algo: LZ4HC, Level: 9, Blocks: sbl, ZeroPadding: true},
		Dst: Info{Algo: LZ4HC, Level: 9, Blocks: dbl, ZeroPadding: true}, Inner: InnerPuffdiff}
	// A postfix patch on cluster 1: the generator's block differs from
	// what re-compression gives.
	want := bytes.Clone(db)
	want[blockSize+blockSize/2] ^= 0xFF
	sum := sha256.Sum256(db[blockSize : 2*blockSize])
	post, err := bsdiff.Diff(db[blockSize:2*blockSize], want[blockSize:2*blockSize]).Encode(bsdiff.Format{})
	if err != nil {
		t.Fatal(err)
	}
	h.Dst.Blocks[1].SHA256, h.Dst.Blocks[1].PostfixBspatch = sum[:], post
	patch := h.Encode(inner)
	got, err := Apply(sb, patch)
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, make([]byte, roundUp(len(want))-len(want))...)
	if !bytes.Equal(got, want) {
		t.Fatal("output differs")
	}
	// A hash that does not match: a clear error.
	h.Dst.Blocks[1].SHA256[0] ^= 1
	if _, err := Apply(sb, h.Encode(inner)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong sha256: %v", err)
	}
	h.Dst.Blocks[1].SHA256[0] ^= 1
	// A patch naming another level than the one its blocks were made
	// with: the re-compressed cluster fails its hash.
	h.Dst.Level = 12
	if _, err := Apply(sb, h.Encode(inner)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("level 12 for level-9 clusters: %v", err)
	}
	h.Dst.Level = 9
	// Wrong source size.
	if _, err := Apply(sb[:len(sb)-1], patch); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("short source: %v", err)
	}
}

// TestCraftedBlocksRefused: a patch asking for many tiny destination
// blocks over match-free data (each re-compression scans to the end of the
// data) is refused instead of running quadratically, at a hash-chain and at
// an optimal-parser level.
func TestCraftedBlocksRefused(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	data := make([]byte, 256<<10)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	var sbl, dbl []Block
	for off := 0; off < len(data); off += blockSize {
		sbl = append(sbl, Block{UncompressedOffset: uint64(off), UncompressedLength: blockSize, CompressedLength: blockSize})
		dbl = append(dbl, Block{UncompressedOffset: uint64(off), UncompressedLength: blockSize, CompressedLength: 16})
	}
	inner, err := bsdiff.Diff(data, data).Encode(bsdiff.Format{})
	if err != nil {
		t.Fatal(err)
	}
	for _, level := range []int32{9, 12} {
		h := &Header{Src: Info{Algo: LZ4HC, Level: level, Blocks: sbl}, Dst: Info{Algo: LZ4HC, Level: level, Blocks: dbl}}
		if _, err := Apply(data, h.Encode(inner)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("level %d: %v", level, err)
		}
	}
}

func FuzzApply(f *testing.F) {
	old := text(1, 6000)
	inner, _ := bsdiff.Diff(old, edit(old, 2)).Encode(bsdiff.Format{})
	for _, level := range []int32{9, 12} {
		sb, sbl := clusters(old, LZ4HC, level, true)
		_, dbl := clusters(edit(old, 2), LZ4HC, level, true)
		h := &Header{Src: Info{Algo: LZ4HC, Level: level, Blocks: sbl, ZeroPadding: true}, Dst: Info{Algo: LZ4HC, Level: level, Blocks: dbl, ZeroPadding: true}}
		f.Add(sb, h.Encode(inner))
	}
	f.Fuzz(func(t *testing.T, src, patch []byte) {
		out, err := Apply(src, patch)
		if err == nil && len(out) > maxOutput+blockSize {
			t.Fatalf("%d-byte output", len(out))
		}
	})
}
