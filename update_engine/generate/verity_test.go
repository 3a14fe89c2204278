package generate

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

// gf256 multiplication with polynomial 0x11d, written independently of the
// verity package for checking its output.
func gfMulTest(a, b byte) byte {
	var p byte
	for b != 0 {
		if b&1 != 0 {
			p ^= a
		}
		hi := a & 0x80
		a <<= 1
		if hi != 0 {
			a ^= 0x1d
		}
		b >>= 1
	}
	return p
}

// TestVerityImages checks the extended images against the definitions: the
// hash tree of a 3-block image is one block of H(salt||block) digests, and
// every interleaved RS(255, 253) codeword of the FEC region has zero
// syndromes at α^0 and α^1.
func TestVerityImages(t *testing.T) {
	const bs = 4096
	rng := rand.New(rand.NewPCG(7, 7))
	mk := func(n int) []byte {
		b := make([]byte, n*bs)
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return b
	}
	newA, oldA := mk(3), mk(3)
	newB := mk(300)
	cfg := Config{MinorVersion: -1, Partitions: []Partition{{Name: "a", Old: oldA, New: newA}, {Name: "b", Old: mk(300), New: newB}},
		Verity: &Verity{}, ChunkSize: 64 << 10, DisableDiff: true, Compressions: []Compression{}}
	res := generate(t, cfg)
	if len(res.Images) != 2 {
		t.Fatalf("%d images", len(res.Images))
	}
	// Partition a: 3 data blocks, 1 tree block, FEC over 4 blocks: 1 round.
	a := res.Images[0]
	pu := res.Manifest.Partitions[0]
	salt := pu.HashTreeSalt
	if want := (&Verity{Seed: "vabc-verity"}).salt("a"); !bytes.Equal(salt, want) {
		t.Fatalf("salt %x, want SHA-256(seed, 0, name) = %x", salt, want)
	}
	if len(a.New) != (3+1+2)*bs || !bytes.Equal(a.New[:3*bs], newA) || len(a.Old) != len(a.New) || !bytes.Equal(a.Old[:3*bs], oldA) {
		t.Fatalf("partition a: image sizes new %d old %d", len(a.New), len(a.Old))
	}
	tree := a.New[3*bs : 4*bs]
	for i := range 3 {
		h := sha256.New()
		h.Write(salt)
		h.Write(newA[i*bs : (i+1)*bs])
		if !bytes.Equal(tree[i*32:(i+1)*32], h.Sum(nil)) {
			t.Fatalf("tree digest %d wrong", i)
		}
	}
	if !isZero(tree[3*32:]) {
		t.Fatal("tree block not zero-padded")
	}
	for pi, im := range res.Images {
		pu := res.Manifest.Partitions[pi]
		data := int(pu.FecDataExtent.GetNumBlocks())
		fecStart := int(pu.FecExtent.GetStartBlock())
		rounds := (data + 252) / 253
		if int(pu.FecExtent.GetNumBlocks()) != rounds*2 {
			t.Fatalf("%s: %d FEC blocks for %d rounds", im.Name, pu.FecExtent.GetNumBlocks(), rounds)
		}
		word := make([]byte, 255)
		for i := 0; i < rounds; i++ {
			for k := 0; k < bs; k += 997 { // a sample of byte offsets
				for j := range 253 {
					word[j] = 0
					if b := j*rounds + i; b < data {
						word[j] = im.New[b*bs+k]
					}
				}
				par := im.New[fecStart*bs+i*bs*2+k*2:]
				word[253], word[254] = par[0], par[1]
				for _, x := range []byte{1, 2} { // α^0, α^1
					var s byte
					for _, c := range word {
						s = gfMulTest(s, x) ^ c
					}
					if s != 0 {
						t.Fatalf("%s round %d offset %d: syndrome at %d is %#x", im.Name, i, k, x, s)
					}
				}
			}
		}
		// Operations cover only the data blocks.
		for i, op := range pu.Operations {
			for _, e := range op.DstExtents {
				if e.GetStartBlock()+e.GetNumBlocks() > pu.HashTreeDataExtent.GetNumBlocks() {
					t.Errorf("%s op %d writes %v", im.Name, i, e)
				}
			}
		}
		if h := sha256.Sum256(im.New); !bytes.Equal(h[:], pu.NewPartitionInfo.Hash) || uint64(len(im.New)) != pu.NewPartitionInfo.GetSize() {
			t.Errorf("%s: new_partition_info does not describe the extended image", im.Name)
		}
	}
	// Deterministic; the seed changes the salt.
	if again := generate(t, cfg); !bytes.Equal(again.Payload, res.Payload) {
		t.Error("same inputs gave different payloads")
	}
	cfg.Verity = &Verity{Seed: "other"}
	if other := generate(t, cfg); bytes.Equal(other.Manifest.Partitions[0].HashTreeSalt, salt) {
		t.Error("seed does not change the salt")
	}
	// Full payloads: no verity fields, ops cover the tree and FEC.
	full := generate(t, Config{MinorVersion: -1, Partitions: []Partition{{Name: "b", New: newB}}, Verity: &Verity{}, ChunkSize: 64 << 10, Compressions: []Compression{}})
	if full.Manifest.Partitions[0].HashTreeExtent != nil || full.Manifest.Partitions[0].FecExtent != nil {
		t.Error("full payload carries verity fields")
	}
	got := applyPayload(t, full.Payload, nil)
	if !bytes.Equal(got["b"], full.Images[0].New) || !bytes.Equal(full.Images[0].New, res.Images[1].New) {
		t.Error("full payload does not reproduce the extended image")
	}
}

func TestVerityConfigErrors(t *testing.T) {
	img := make([]byte, 8*4096)
	for name, cfg := range map[string]Config{
		"delta minor 5": {MinorVersion: 5, Verity: &Verity{}, Partitions: []Partition{{Name: "a", Old: img, New: img}}},
		"one block":     {MinorVersion: -1, Verity: &Verity{}, Partitions: []Partition{{Name: "a", New: img[:4096]}}},
		"algorithm":     {MinorVersion: -1, Verity: &Verity{Algorithm: "md5"}, Partitions: []Partition{{Name: "a", New: img}}},
		"fec roots":     {MinorVersion: -1, Verity: &Verity{FECRoots: 30}, Partitions: []Partition{{Name: "a", New: img}}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Generate(t.Context(), cfg); err == nil {
				t.Fatal("expected an error")
			}
		})
	}
}
