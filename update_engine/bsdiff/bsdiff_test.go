package bsdiff

import (
	"bytes"
	"compress/bzip2"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/vabc-go/vabc/internal/testtool"
	"github.com/vabc-go/vabc/update_engine/bspatch"
)

// checkBspatch applies patch with update_engine/bspatch, the applier the
// payload code uses.
func checkBspatch(t *testing.T, old, patch, want []byte) {
	t.Helper()
	var out bytes.Buffer
	if err := bspatch.Apply(old, patch, &out); err != nil {
		t.Fatalf("bspatch.Apply: %v", err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatal("bspatch.Apply output differs")
	}
}

// applyPatch is a minimal bspatch used only to check the encoder; the real
// applier lives in update_engine/bspatch.
func applyPatch(old, patch []byte) ([]byte, error) {
	if len(patch) < HeaderSize {
		return nil, errors.New("short patch")
	}
	var types [3]Compressor
	switch {
	case string(patch[:8]) == "BSDIFF40":
		types = [3]Compressor{Bzip2, Bzip2, Bzip2}
	case string(patch[:5]) == "BSDF2":
		types = [3]Compressor{Compressor(patch[5]), Compressor(patch[6]), Compressor(patch[7])}
	default:
		return nil, errors.New("bad magic")
	}
	cl, dl, ns := Offt(patch[8:]), Offt(patch[16:]), Offt(patch[24:])
	if cl < 0 || dl < 0 || ns < 0 || cl > int64(len(patch)-HeaderSize) || dl > int64(len(patch)-HeaderSize)-cl {
		return nil, errors.New("bad lengths")
	}
	raw := [][]byte{patch[32 : 32+cl], patch[32+cl : 32+cl+dl], patch[32+cl+dl:]}
	var dec [3][]byte
	for i := range raw {
		var r io.Reader
		switch types[i] {
		case Bzip2:
			r = bzip2.NewReader(bytes.NewReader(raw[i]))
		case Brotli:
			r = brotli.NewReader(bytes.NewReader(raw[i]))
		default:
			return nil, fmt.Errorf("compressor %d", types[i])
		}
		b, err := io.ReadAll(r)
		if err != nil {
			return nil, err
		}
		dec[i] = b
	}
	ctrl, diff, extra := dec[0], dec[1], dec[2]
	out := make([]byte, 0, ns)
	oldPos := int64(0)
	for len(ctrl) >= 24 && int64(len(out)) < ns {
		d, e, s := Offt(ctrl), Offt(ctrl[8:]), Offt(ctrl[16:])
		ctrl = ctrl[24:]
		if d < 0 || e < 0 || int64(len(out))+d+e > ns || d > int64(len(diff)) || e > int64(len(extra)) {
			return nil, errors.New("corrupt control")
		}
		for i := int64(0); i < d; i++ {
			b := diff[i]
			if p := oldPos + i; p >= 0 && p < int64(len(old)) {
				b += old[p]
			}
			out = append(out, b)
		}
		diff = diff[d:]
		out = append(out, extra[:e]...)
		extra = extra[e:]
		oldPos += d + s
	}
	if int64(len(out)) != ns {
		return nil, errors.New("short output")
	}
	return out, nil
}

func mutate(r *rand.Rand, old []byte) []byte {
	nw := append([]byte(nil), old...)
	for k := r.IntN(6); k >= 0; k-- {
		switch r.IntN(4) {
		case 0: // overwrite
			if len(nw) == 0 {
				continue
			}
			p := r.IntN(len(nw))
			for i := p; i < min(len(nw), p+r.IntN(64)); i++ {
				nw[i] = byte(r.Uint32())
			}
		case 1: // insert
			p := r.IntN(len(nw) + 1)
			ins := make([]byte, r.IntN(200))
			for i := range ins {
				ins[i] = byte(r.Uint32())
			}
			nw = append(nw[:p], append(ins, nw[p:]...)...)
		case 2: // delete
			if len(nw) == 0 {
				continue
			}
			p := r.IntN(len(nw))
			nw = append(nw[:p], nw[min(len(nw), p+r.IntN(300)):]...)
		case 3: // increment bytes (the case bsdiff's diff stream is made for)
			if len(nw) == 0 {
				continue
			}
			p := r.IntN(len(nw))
			for i := p; i < min(len(nw), p+1000); i += 4 {
				nw[i]++
			}
		}
	}
	return nw
}

func randomText(r *rand.Rand, n int) []byte {
	words := []string{"system", "vendor", "boot", "lib", "so", "apk", "odex", "\n", " ", "0x1f", "update_engine"}
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
	}
	return b.Bytes()[:n]
}

func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	type pair struct{ old, new []byte }
	cases := map[string]pair{
		"empty-empty": {nil, nil},
		"empty-old":   {nil, []byte("brand new data")},
		"empty-new":   {[]byte("old data"), nil},
		"identical":   {randomText(r, 5000), nil},
	}
	cases["identical"] = pair{cases["identical"].old, cases["identical"].old}
	for i := 0; i < 12; i++ {
		old := randomText(r, 1000+r.IntN(40000))
		cases[fmt.Sprintf("text%d", i)] = pair{old, mutate(r, old)}
	}
	rnd := make([]byte, 64<<10)
	for i := range rnd {
		rnd[i] = byte(r.Uint32())
	}
	cases["random-mutated"] = pair{rnd, mutate(r, rnd)}
	cases["unrelated"] = pair{randomText(r, 3000), rnd[:5000]}
	formats := map[string]Format{
		"bsdiff40":     {Legacy: true},
		"bsdf2-bz2":    {Ctrl: Bzip2, Diff: Bzip2, Extra: Bzip2},
		"bsdf2-brotli": {Ctrl: Brotli, Diff: Brotli, Extra: Brotli},
		"bsdf2-mixed":  {Ctrl: Brotli, Diff: Bzip2, Extra: Brotli},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			d := Diff(c.old, c.new)
			for fname, f := range formats {
				p, err := d.Encode(f)
				if err != nil {
					t.Fatal(err)
				}
				got, err := applyPatch(c.old, p)
				if err != nil || !bytes.Equal(got, c.new) {
					t.Fatalf("%s: round trip failed: %v", fname, err)
				}
				checkBspatch(t, c.old, p, c.new)
			}
			p, _, err := d.EncodeSmallest(true, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := applyPatch(c.old, p); err != nil || !bytes.Equal(got, c.new) {
				t.Fatalf("smallest: round trip failed: %v", err)
			}
		})
	}
}

func TestSmallForSmallEdit(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	old := make([]byte, 256<<10)
	for i := range old {
		old[i] = byte(r.Uint32())
	}
	nw := append([]byte(nil), old...)
	copy(nw[1000:], "a small edit")
	nw = append(nw[:5000], append([]byte("inserted bytes"), nw[5000:]...)...)
	p, _, err := Diff(old, nw).EncodeSmallest(true, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) > 1000 {
		t.Fatalf("patch for two small edits of 256 KiB random data is %d bytes", len(p))
	}
}

func TestDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	old := randomText(r, 50000)
	nw := mutate(r, old)
	a, _ := Diff(old, nw).Encode(Format{Ctrl: Brotli, Diff: Brotli, Extra: Bzip2})
	b, _ := Diff(old, nw).Encode(Format{Ctrl: Brotli, Diff: Brotli, Extra: Bzip2})
	if !bytes.Equal(a, b) {
		t.Fatal("patch differs between runs")
	}
}

// TestBspatchTool applies BSDIFF40 patches with Debian's bspatch when present.
func TestBspatchTool(t *testing.T) {
	tool := testtool.Need(t, "bspatch")
	r := rand.New(rand.NewPCG(9, 9))
	old := randomText(r, 30000)
	nw := mutate(r, old)
	p, _ := Diff(old, nw).Encode(Format{Legacy: true})
	dir := t.TempDir()
	op, np, pp := filepath.Join(dir, "old"), filepath.Join(dir, "new"), filepath.Join(dir, "patch")
	os.WriteFile(op, old, 0o644)
	os.WriteFile(pp, p, 0o644)
	if out, err := exec.Command(tool, op, np, pp).CombinedOutput(); err != nil {
		t.Fatalf("bspatch: %v: %s", err, out)
	}
	got, _ := os.ReadFile(np)
	if !bytes.Equal(got, nw) {
		t.Fatal("bspatch output differs")
	}
}

func TestOfft(t *testing.T) {
	for _, v := range []int64{0, 1, -1, 1 << 40, -(1 << 62), 255, -256} {
		var b [8]byte
		PutOfft(b[:], v)
		if got := Offt(b[:]); got != v {
			t.Errorf("Offt(PutOfft(%d)) = %d", v, got)
		}
	}
}

// FuzzDiff checks that any pair round-trips through the encoder.
func FuzzDiff(f *testing.F) {
	f.Add([]byte("hello world, hello world"), []byte("hello there world, hello world!"))
	f.Add([]byte{}, []byte{1, 2, 3})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, []byte{0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, old, nw []byte) {
		d := Diff(old, nw)
		p, err := d.Encode(Format{Ctrl: Brotli, Diff: Bzip2, Extra: Brotli, BrotliQuality: 1})
		if err != nil {
			t.Fatal(err)
		}
		got, err := applyPatch(old, p)
		if err != nil || !bytes.Equal(got, nw) {
			t.Fatalf("round trip failed: %v", err)
		}
		checkBspatch(t, old, p, nw)
		legacy, err := d.Encode(Format{Legacy: true})
		if err != nil {
			t.Fatal(err)
		}
		checkBspatch(t, old, legacy, nw)
	})
}
