package create

import (
	"bytes"
	"io"
	"testing"

	"github.com/vabc-go/vabc/cow"
)

// FuzzOrder builds an arbitrary plan (3 bytes per block: kind, source) and
// checks that Order returns a safe order: every ordered op exactly once,
// none reading a block an earlier op of the order wrote, and converted
// copies turned into Replace ops.
func FuzzOrder(f *testing.F) {
	f.Add([]byte{2, 1, 0, 2, 0, 0})                   // swap
	f.Add([]byte{2, 1, 0, 2, 2, 0, 2, 0, 0, 2, 2, 0}) // 3-cycle with a tail
	f.Add([]byte{4, 0, 10, 2, 0, 0, 0, 0, 0})         // unaligned xor
	f.Fuzz(func(t *testing.T, data []byte) {
		n := len(data) / 3
		if n == 0 || n > 4096 {
			return
		}
		const bsz = 512
		blocks := make([]BlockOp, n)
		for i := range blocks {
			k := Kind(data[3*i] % 5)
			src := uint64(data[3*i+1])<<8 | uint64(data[3*i+2])
			switch k {
			case KindCopy:
				src %= uint64(n) + 2 // may point past the target
			case KindXor:
				src %= uint64(n+1) * bsz
			default:
				src = 0
			}
			blocks[i] = BlockOp{Kind: k, Src: src}
		}
		before := append([]BlockOp(nil), blocks...)
		order, broken, err := Order(blocks, bsz)
		if err != nil {
			t.Fatal(err)
		}
		in := map[uint32]bool{}
		for _, b := range order {
			if in[b] || !before[b].Kind.ordered() {
				t.Fatalf("block %d: repeated or not ordered", b)
			}
			in[b] = true
		}
		for _, b := range broken {
			if in[b] || before[b].Kind != KindCopy && before[b].Kind != KindXor || blocks[b].Kind != KindReplace {
				t.Fatalf("broken block %d: %v → %v", b, before[b], blocks[b])
			}
			in[b] = true
		}
		for b := range before {
			if before[b].Kind.ordered() && !in[uint32(b)] {
				t.Fatalf("ordered block %d lost", b)
			}
		}
		written := map[uint64]bool{}
		var reads []uint64
		for _, b := range order {
			for _, r := range blocks[b].reads(bsz, reads[:0]) {
				if written[r] && r != uint64(b) {
					t.Fatalf("block %d reads %d after it was overwritten", b, r)
				}
			}
			written[uint64(b)] = true
		}
	})
}

// FuzzView parses arbitrary COW bytes and, when they parse, reconstructs a
// snapshot over a small base image: it must never panic.
func FuzzView(f *testing.F) {
	src := bytes.Repeat([]byte("0123456789abcdef"), 16*4096/16)
	tgt := bytes.Clone(src)
	copy(tgt[4096:], src[3*4096:4*4096])
	clear(tgt[8192:12288])
	for _, ver := range []int{2, 3} {
		var wo cow.WriterOptions
		wo.SetCompression("lz4")
		wo.NoScratch = true
		p, err := Analyze(f.Context(), Image{bytes.NewReader(src), int64(len(src)), "src"}, Image{bytes.NewReader(tgt), int64(len(tgt)), "tgt"}, Options{})
		if err != nil {
			f.Fatal(err)
		}
		var buf memFile
		w, err := newWriter(&buf, p, CowOptions{Version: ver, Writer: wo})
		if err != nil {
			f.Fatal(err)
		}
		if err := Emit(f.Context(), p, Image{bytes.NewReader(src), int64(len(src)), "src"}, Image{bytes.NewReader(tgt), int64(len(tgt)), "tgt"}, w, nil); err != nil {
			f.Fatal(err)
		}
		if err := w.Finalize(); err != nil {
			f.Fatal(err)
		}
		f.Add(bytes.Clone(buf.b))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := cow.NewReader(bytes.NewReader(data), int64(len(data)), nil)
		if err != nil {
			return
		}
		v, err := NewView(r, bytes.NewReader(data), Image{bytes.NewReader(src), int64(len(src)), "src"})
		if err != nil {
			return
		}
		v.Verify(t.Context(), Image{bytes.NewReader(tgt), int64(len(tgt)), "tgt"}, 2, nil)
	})
}

// memFile is an in-memory cow.File.
type memFile struct{ b []byte }

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memFile) Sync() error { return nil }

func (m *memFile) Truncate(size int64) error {
	if size < int64(len(m.b)) {
		m.b = m.b[:size]
	} else {
		m.b = append(m.b, make([]byte, size-int64(len(m.b)))...)
	}
	return nil
}
