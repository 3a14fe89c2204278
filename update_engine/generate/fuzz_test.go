package generate

import (
	"bytes"
	"testing"
)

// FuzzGenerate derives an old and a new image from the fuzz input, generates
// an incremental payload with VABC metadata (and a full one) and checks that
// applying it reproduces the new image and that the merge order is safe.
func FuzzGenerate(f *testing.F) {
	f.Add([]byte("seed"), uint8(3), uint8(1))
	f.Add(bytes.Repeat([]byte{0, 1, 2, 3, 0, 0, 0, 0}, 300), uint8(9), uint8(7))
	f.Add([]byte{}, uint8(0), uint8(0))
	const bs = 512
	f.Fuzz(func(t *testing.T, data []byte, nOld, shift uint8) {
		// Old image: blocks built from data, repeated and shifted so moved
		// and similar blocks occur.
		mk := func(n int, off int) []byte {
			img := make([]byte, n*bs)
			if len(data) == 0 {
				return img
			}
			for i := range img {
				if (i/bs)%5 == 4 {
					continue // zero blocks
				}
				img[i] = data[(i+off)%len(data)] + byte(i/(bs*3))
			}
			return img
		}
		ob := int(nOld%12) + 1
		old := mk(ob, 0)
		new := mk(int(shift%12)+1, int(shift))
		if len(data) > 0 && len(new) > 0 {
			copy(new[len(new)/3:], old[:min(len(old), len(new)-len(new)/3)]) // moved content
		}
		cfg := Config{MinorVersion: -1, BlockSize: bs, ChunkSize: 4 * bs, BrotliQuality: 1,
			Partitions: []Partition{{Name: "p", Old: old, New: new}},
			VABC:       &VABC{XOR: true}}
		res, err := Generate(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		checkLayout(t, res, true)
		got := applyPayload(t, res.Payload, map[string][]byte{"p": old})
		if !bytes.Equal(got["p"], new) {
			t.Fatal("incremental payload does not reproduce the new image")
		}
		simulateMerge(t, res.Manifest.Partitions[0], old, new, bs)
		checkCowBound(t, res.Manifest.Partitions[0], old, new, bs)
		full, err := Generate(t.Context(), Config{MinorVersion: -1, BlockSize: bs, ChunkSize: 4 * bs,
			Compressions: []Compression{BZ2}, Partitions: []Partition{{Name: "p", New: new}}})
		if err != nil {
			t.Fatal(err)
		}
		if got := applyPayload(t, full.Payload, nil); !bytes.Equal(got["p"], new) {
			t.Fatal("full payload does not reproduce the new image")
		}
	})
}
