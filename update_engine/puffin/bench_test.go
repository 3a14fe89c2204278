package puffin

import (
	"bytes"
	"compress/flate"
	"testing"
)

// benchPair is a pair of ~1 MiB "archives": 32 deflate streams each, a few
// bytes of every fourth stream's content changed.
func benchPair(b *testing.B) (old, new []byte, od, nd []BitExtent) {
	in := corpus(96)
	build := func(edit bool) ([]byte, []BitExtent) {
		var out []byte
		var defl []BitExtent
		for i, c := range in {
			if len(c) < 4000 {
				continue
			}
			c = bytes.Clone(c)
			if edit && i%4 == 0 {
				c[len(c)/2] ^= 0x20
			}
			var s bytes.Buffer
			w, _ := flate.NewWriter(&s, 6)
			w.Write(c)
			w.Close()
			out = append(out, "header.."...)
			d, _, err := LocateStream(append(bytes.Clone(out), s.Bytes()...), uint64(len(out))*8)
			if err != nil {
				b.Fatal(err)
			}
			defl = append(defl, d...)
			out = append(out, s.Bytes()...)
		}
		return out, defl
	}
	old, od = build(false)
	new, nd = build(true)
	return
}

func BenchmarkPuffPatch(b *testing.B) {
	old, new, od, nd := benchPair(b)
	patch, err := Diff(old, new, od, nd, DiffOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%d-byte target, puffdiff patch %d bytes", len(new), len(patch))
	b.SetBytes(int64(len(new)))
	b.ResetTimer()
	for range b.N {
		if _, err := Apply(old, patch, int64(len(new)), 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPuffHuff(b *testing.B) {
	old, _, od, _ := benchPair(b)
	b.SetBytes(int64(len(old)))
	b.ResetTimer()
	for range b.N {
		p, puffs, err := PuffStream(old, od)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := HuffStream(p, od, puffs); err != nil {
			b.Fatal(err)
		}
	}
}
