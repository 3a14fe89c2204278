package bspatch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/andybalholm/brotli"

	"github.com/vabc-go/vabc/internal/testtool"
)

func offtout(v int64) []byte {
	var b [8]byte
	m := uint64(v)
	if v < 0 {
		m = uint64(-v) | 1<<63
	}
	binary.LittleEndian.PutUint64(b[:], m)
	return b[:]
}

func compress(t testing.TB, c Compressor, b []byte) []byte {
	t.Helper()
	switch c {
	case None:
		return b
	case Brotli:
		var out bytes.Buffer
		w := brotli.NewWriterLevel(&out, 5)
		w.Write(b)
		w.Close()
		return out.Bytes()
	case BZ2:
		testtool.Need(t, "bzip2")
		cmd := exec.Command("bzip2", "-c")
		cmd.Stdin = bytes.NewReader(b)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	t.Fatalf("compressor %d", c)
	return nil
}

type triple struct{ x, y, z int64 }

// makePatch builds a patch whose control stream is ctrl; diff bytes are
// computed so that the result is want.
func makePatch(t testing.TB, magic string, comps [3]Compressor, old, want []byte, ctrl []triple) []byte {
	t.Helper()
	var c, d, e []byte
	var np, op int64
	for _, tr := range ctrl {
		c = append(c, offtout(tr.x)...)
		c = append(c, offtout(tr.y)...)
		c = append(c, offtout(tr.z)...)
		for i := int64(0); i < tr.x; i++ {
			var o byte
			if op+i >= 0 && op+i < int64(len(old)) {
				o = old[op+i]
			}
			d = append(d, want[np+i]-o)
		}
		np += tr.x
		op += tr.x
		e = append(e, want[np:np+tr.y]...)
		np += tr.y
		op += tr.z
	}
	cc, dc, ec := compress(t, comps[0], c), compress(t, comps[1], d), compress(t, comps[2], e)
	var p []byte
	if magic == "BSDIFF40" {
		p = []byte("BSDIFF40")
	} else {
		p = append([]byte("BSDF2"), byte(comps[0]), byte(comps[1]), byte(comps[2]))
	}
	p = append(p, offtout(int64(len(cc)))...)
	p = append(p, offtout(int64(len(dc)))...)
	p = append(p, offtout(int64(len(want)))...)
	p = append(append(append(p, cc...), dc...), ec...)
	return p
}

func testData() (old, want []byte) {
	rng := rand.New(rand.NewPCG(3, 4))
	old = make([]byte, 100000)
	for i := range old {
		old[i] = byte(rng.IntN(256))
	}
	want = append([]byte{}, old[5000:60000]...)
	for i := 0; i < len(want); i += 97 {
		want[i]++
	}
	want = append(want, []byte("inserted extra bytes")...)
	want = append(want, old[:3000]...)
	return old, want
}

func TestApply(t *testing.T) {
	old, want := testData()
	ctrl := []triple{
		{-0 + 55000, 20, -58020}, // diff against old[5000:60000], extra, seek back to 0
		{3000, 0, 0},
	}
	// The first triple starts at old position 0; shift by seeking first.
	ctrl = append([]triple{{0, 0, 5000}}, ctrl...)
	for _, tc := range []struct {
		name  string
		magic string
		comps [3]Compressor
	}{
		{"bsdiff40", "BSDIFF40", [3]Compressor{BZ2, BZ2, BZ2}},
		{"bsdf2-brotli", "BSDF2", [3]Compressor{Brotli, Brotli, Brotli}},
		{"bsdf2-none", "BSDF2", [3]Compressor{None, None, None}},
		{"bsdf2-mixed", "BSDF2", [3]Compressor{BZ2, Brotli, None}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := makePatch(t, tc.magic, tc.comps, old, want, ctrl)
			var out bytes.Buffer
			if err := Apply(old, p, &out); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Fatal("output differs")
			}
		})
	}
}

// TestOutOfRangeOld checks that old positions outside old read as zero.
func TestOutOfRangeOld(t *testing.T) {
	old := []byte("0123456789")
	want := []byte("abcdefghijklmnopqrstuvwxyz")
	ctrl := []triple{{0, 0, -5}, {20, 0, 0}, {6, 0, 0}}
	p := makePatch(t, "BSDF2", [3]Compressor{None, None, None}, old, want, ctrl)
	var out bytes.Buffer
	if err := Apply(old, p, &out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("got %q", out.Bytes())
	}
}

func TestAgainstBsdiffCLI(t *testing.T) {
	testtool.Need(t, "bsdiff")
	old, want := testData()
	dir := t.TempDir()
	o, n, p := filepath.Join(dir, "old"), filepath.Join(dir, "new"), filepath.Join(dir, "patch")
	os.WriteFile(o, old, 0o644)
	os.WriteFile(n, want, 0o644)
	if out, err := exec.Command("bsdiff", o, n, p).CombinedOutput(); err != nil {
		t.Fatalf("bsdiff: %v %s", err, out)
	}
	patch, _ := os.ReadFile(p)
	var out bytes.Buffer
	if err := Apply(old, patch, &out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatal("output differs")
	}
}

func TestCorrupt(t *testing.T) {
	old, want := testData()
	good := makePatch(t, "BSDF2", [3]Compressor{None, None, None}, old, want, []triple{{int64(len(want)), 0, 0}})
	mod := func(f func(p []byte) []byte) []byte { return f(append([]byte{}, good...)) }
	tests := map[string][]byte{
		"short":          good[:20],
		"magic":          mod(func(p []byte) []byte { p[0] = 'X'; return p }),
		"compressor":     mod(func(p []byte) []byte { p[6] = 9; return p }),
		"ctrl-too-long":  mod(func(p []byte) []byte { copy(p[8:], offtout(1<<40)); return p }),
		"negative-diff":  mod(func(p []byte) []byte { copy(p[16:], offtout(-1)); return p }),
		"new-too-big":    mod(func(p []byte) []byte { copy(p[24:], offtout(int64(len(want)+1))); return p }),
		"truncated-diff": good[:len(good)-100],
		"triple-overrun": mod(func(p []byte) []byte { copy(p[32:], offtout(int64(len(want)+5))); return p }),
		"negative-extra": mod(func(p []byte) []byte { copy(p[40:], offtout(-3)); return p }),
		"brotli-garbage": mod(func(p []byte) []byte { p[5], p[6], p[7] = 2, 2, 2; return p }),
	}
	for name, p := range tests {
		t.Run(name, func(t *testing.T) {
			err := Apply(old, p, &bytes.Buffer{})
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v, want ErrCorrupt", err)
			}
		})
	}
}

func FuzzApply(f *testing.F) {
	old := []byte("the quick brown fox jumps over the lazy dog")
	want := []byte("the quick red fox jumped over the lazy dogs!")
	f.Add(old, makePatch(f, "BSDF2", [3]Compressor{None, None, None}, old, want, []triple{{10, 3, 3}, {20, 11, 0}}))
	f.Add(old, makePatch(f, "BSDF2", [3]Compressor{Brotli, Brotli, Brotli}, old, want, []triple{{44, 0, 0}}))
	f.Fuzz(func(t *testing.T, old, patch []byte) {
		h, err := ParseHeader(patch)
		if err != nil {
			return
		}
		if h.NewSize > 1<<24 {
			return
		}
		var out bytes.Buffer
		if err := Apply(old, patch, &out); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("unmarked error %v", err)
			}
			return
		}
		if int64(out.Len()) != h.NewSize {
			t.Fatalf("wrote %d bytes, header says %d", out.Len(), h.NewSize)
		}
	})
}
