package create

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/cow/create/createtest"
)

func img(name string, p []byte) Image { return Image{bytes.NewReader(p), int64(len(p)), name} }

// codecs of the library matrix; cmd/cowctl's CLI matrix covers every codec
// (brotli at its default level 11 is slow).
var codecs = []string{"none", "lz4", "gz"}

// mergeInMemory applies the COW to a copy of src in the reader's merge order
// (the plain algorithm, no crash safety) and returns the result cut to size.
func mergeInMemory(t *testing.T, r *cow.Reader, src []byte, size int64) []byte {
	t.Helper()
	bsz := int(r.Header().BlockSize)
	n := max(int64(len(src)), size)
	n = (n + int64(bsz) - 1) / int64(bsz) * int64(bsz)
	base := make([]byte, n)
	copy(base, src)
	mo := r.MergeOrder()
	for i := range mo {
		op := &mo[i]
		dst := base[op.NewBlock*uint64(bsz):]
		switch op.Type {
		case cow.OpCopy:
			copy(dst[:bsz], base[op.Source*uint64(bsz):])
		case cow.OpZero:
			clear(dst[:bsz])
		case cow.OpReplace:
			unit := bsz << op.FactorShift
			if _, err := r.ReadData(op, dst[:unit], 0); err != nil {
				t.Fatalf("merge step %d: %v", i, err)
			}
		case cow.OpXor:
			x := make([]byte, bsz)
			if _, err := r.ReadData(op, x, 0); err != nil {
				t.Fatalf("merge step %d: %v", i, err)
			}
			for j := range x {
				x[j] ^= base[op.Source+uint64(j)]
			}
			copy(dst, x)
		default:
			t.Fatalf("merge step %d: %s", i, op)
		}
	}
	return base[:size]
}

func TestBuildMatrix(t *testing.T) {
	pairs := createtest.Pairs(3, 192)
	if p, err := createtest.Ext4Pair(t.TempDir(), 3, 2048); err == nil {
		pairs = append(pairs, p)
	} else {
		t.Logf("ext4 pair skipped: %v", err)
	}
	dir := t.TempDir()
	for _, pair := range pairs {
		plan := analyze(t, pair.Source, pair.Target, Options{Xor: true, Threads: 2})
		for _, ver := range []int{2, 3} {
			for _, codec := range codecs {
				t.Run(fmt.Sprintf("%s/v%d/%s", pair.Name, ver, codec), func(t *testing.T) {
					var wo cow.WriterOptions
					if err := wo.SetCompression(codec); err != nil {
						t.Fatal(err)
					}
					if ver == 3 {
						wo.CompressionFactor = 64 << 10
					}
					path := filepath.Join(dir, fmt.Sprintf("%s-v%d-%s.cow", pair.Name, ver, codec))
					p := *plan
					p.Blocks = append([]BlockOp(nil), plan.Blocks...)
					res, err := Write(t.Context(), &p, img("src", pair.Source), img("tgt", pair.Target), path, CowOptions{Version: ver, Writer: wo}, nil)
					if err != nil {
						t.Fatal(err)
					}
					est, err := Estimate(t.Context(), &p, img("src", pair.Source), img("tgt", pair.Target), CowOptions{Version: ver, Writer: wo}, nil)
					if err != nil {
						t.Fatal(err)
					}
					if est.Size != res.Size {
						t.Errorf("estimate %d bytes, written %d", est.Size, res.Size)
					}
					if fmt.Sprint(est.OpCounts) != fmt.Sprint(res.OpCounts) {
						t.Errorf("estimate ops %v, written %v", est.OpCounts, res.OpCounts)
					}
					r, err := cow.Open(path, nil)
					if err != nil {
						t.Fatal(err)
					}
					defer r.Close()
					if got := mergeInMemory(t, r, pair.Source, int64(len(pair.Target))); !bytes.Equal(got, pair.Target) {
						t.Fatal("merged image differs from target")
					}
					v, err := NewView(r, nil, img("src", pair.Source))
					if err != nil {
						t.Fatal(err)
					}
					m, err := v.Verify(t.Context(), img("tgt", pair.Target), 2, nil)
					if err != nil || m != nil {
						t.Fatalf("verify: %v %v", m, err)
					}
					// A flipped payload byte must be caught.
					if res.OpCounts["replace"]+res.OpCounts["xor"] == 0 {
						return
					}
					data, _ := os.ReadFile(path)
					off := corruptOffset(t, r)
					data[off] ^= 0x5a
					r2, err := cow.NewReader(bytes.NewReader(data), int64(len(data)), nil)
					if err != nil {
						return // refused at parse: fine
					}
					v2, err := NewView(r2, bytes.NewReader(data), img("src", pair.Source))
					if err != nil {
						return
					}
					if m, err := v2.Verify(t.Context(), img("tgt", pair.Target), 2, nil); err != nil || m == nil {
						t.Fatalf("corrupted COW verified: %v %v", m, err)
					} else {
						t.Logf("corruption at %#x found: %v", off, m)
					}
				})
			}
		}
	}
}

// corruptOffset picks a byte inside the payload of the last data op.
func corruptOffset(t *testing.T, r *cow.Reader) int64 {
	ops := r.Ops()
	for i := len(ops) - 1; i >= 0; i-- {
		if ops[i].Type == cow.OpReplace || ops[i].Type == cow.OpXor {
			off, err := r.DataOffset(&ops[i])
			if err != nil {
				t.Fatal(err)
			}
			return off + int64(ops[i].DataLength)/2
		}
	}
	t.Fatal("no data op")
	return 0
}

// TestBuildDeterministic: the COW bytes do not depend on the thread count.
func TestBuildDeterministic(t *testing.T) {
	pair := createtest.Pairs(5, 700)[2]
	dir := t.TempDir()
	var ref []byte
	for _, th := range []int{1, 2, 5} {
		path := filepath.Join(dir, fmt.Sprintf("t%d.cow", th))
		var wo cow.WriterOptions
		wo.SetCompression("zstd")
		wo.CompressionFactor = 64 << 10
		if _, err := Build(t.Context(), img("src", pair.Source), img("tgt", pair.Target), path, Options{Xor: true, Threads: th}, CowOptions{Version: 3, Writer: wo}, nil); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		if ref == nil {
			ref = b
		} else if !bytes.Equal(b, ref) {
			t.Fatalf("threads=%d: COW differs from threads=1", th)
		}
	}
}

func TestWriteRefusesUnsafeOrder(t *testing.T) {
	// A plan whose order lets block 1 be overwritten before op 0 reads it.
	src := bytes.Repeat([]byte{1}, 2*bs)
	copy(src[bs:], bytes.Repeat([]byte{2}, bs))
	p := &Plan{BlockSize: bs, SourceSize: int64(len(src)), TargetSize: int64(len(src)),
		Blocks: []BlockOp{{Kind: KindCopy, Src: 1}, {Kind: KindCopy, Src: 0}}, Order: []uint32{1, 0}}
	path := filepath.Join(t.TempDir(), "bad.cow")
	_, err := Write(t.Context(), p, img("src", src), img("tgt", src), path, CowOptions{Version: 3}, nil)
	if err == nil {
		t.Fatal("unsafe COW accepted")
	}
	if _, statErr := os.Stat(path); !os.IsNotExist(statErr) {
		t.Fatalf("unsafe COW left at %s", path)
	}
	t.Log(err)
}

// TestVerifyReportsFirstMismatch: with several differing blocks spread over
// chunks handled by different workers, the lowest one is reported.
func TestVerifyReportsFirstMismatch(t *testing.T) {
	pair := createtest.Pairs(8, 900)[1]
	path := filepath.Join(t.TempDir(), "x.cow")
	var wo cow.WriterOptions
	wo.SetCompression("lz4")
	if _, err := Build(t.Context(), img("src", pair.Source), img("tgt", pair.Target), path, Options{Threads: 2}, CowOptions{Version: 3, Writer: wo}, nil); err != nil {
		t.Fatal(err)
	}
	r, err := cow.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if h := r.Header(); h.OpCount != h.OpCountMax {
		t.Errorf("op_count %d, op_count_max %d: the op region should be exact", h.OpCount, h.OpCountMax)
	}
	v, err := NewView(r, nil, img("src", pair.Source))
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(pair.Target)
	for _, b := range []int{800, 300, 555} {
		want[b*bs+17] ^= 1
	}
	for _, th := range []int{1, 2, 4} {
		m, err := v.Verify(t.Context(), img("want", want), th, nil)
		if err != nil {
			t.Fatal(err)
		}
		if m == nil || m.Block != 300 {
			t.Fatalf("threads %d: mismatch %v, want block 300", th, m)
		}
	}
}
