package snapuserd

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/vabc-go/vabc/cow"
)

// memFile is an in-memory cow.File.
type memFile struct {
	mu sync.Mutex
	b  []byte
}

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= int64(len(m.b)) {
		return 0, fmt.Errorf("memFile: read at %d beyond %d", off, len(m.b))
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, fmt.Errorf("memFile: short read")
	}
	return n, nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if need := off + int64(len(p)); need > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, need-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

func (m *memFile) Sync() error { return nil }
func (m *memFile) Truncate(n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n <= int64(len(m.b)) {
		m.b = m.b[:n]
	} else {
		m.b = append(m.b, make([]byte, n-int64(len(m.b)))...)
	}
	return nil
}

// triple is a generated base/source/COW/target set.
type triple struct {
	name         string
	base, source []byte
	target       []byte
	cow          []byte
	counts       map[cow.OpType]int
	unmapped     int
}

type tripleSpec struct {
	version int // 2 or 3
	comp    cow.Compression
	factor  uint32 // v3 compression factor
	blocks  int
	seed    uint64
}

func (s tripleSpec) String() string {
	if s.version == 2 {
		return fmt.Sprintf("v2-%v", s.comp)
	}
	return fmt.Sprintf("v3-%v-%dK", s.comp, s.factor/1024)
}

// fillBlock writes semi-compressible bytes (text-like runs plus noise).
func fillBlock(r *rand.Rand, b []byte) {
	words := []string{"system ", "vendor ", "product ", "0123456789 ", "android.", "snapuserd ", "\x00\x00\x00\x00"}
	for i := 0; i < len(b); {
		if r.IntN(4) == 0 {
			b[i] = byte(r.Uint32())
			i++
			continue
		}
		i += copy(b[i:], words[r.IntN(len(words))])
	}
}

// genTriple builds source and base images, then a target from runs of
// unmapped, Copy, Xor (aligned and unaligned source offsets), Replace (runs
// long enough for 256 KiB units) and Zero blocks, and writes the COW with
// the requested writer.
func genTriple(t testing.TB, spec tripleSpec) *triple {
	t.Helper()
	r := rand.New(rand.NewPCG(spec.seed, uint64(spec.version)<<8|uint64(spec.comp)))
	n := spec.blocks
	size := n * BlockSize
	tr := &triple{name: spec.String(), base: make([]byte, size), source: make([]byte, size), target: make([]byte, size), counts: map[cow.OpType]int{}}
	for b := range n {
		fillBlock(r, tr.base[b*BlockSize:(b+1)*BlockSize])
		fillBlock(r, tr.source[b*BlockSize:(b+1)*BlockSize])
	}
	f := &memFile{}
	opts := cow.WriterOptions{Compression: spec.comp, MaxBlocks: uint64(n)}
	if spec.comp == cow.CompressionBrotli || spec.comp == cow.CompressionGz {
		// Fast levels keep the generator quick; the decoder is what is tested.
		opts.CompressionLevel, opts.CompressionLevelSet = 1, true
	}
	var w cow.Writer
	var err error
	if spec.version == 2 {
		w, err = cow.NewWriterV2(f, opts)
	} else {
		opts.CompressionFactor = spec.factor
		w, err = cow.NewWriterV3(f, opts)
	}
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
	}
	blk := func(img []byte, b int) []byte { return img[b*BlockSize : (b+1)*BlockSize] }
	// Categories cycle in shuffled rounds so every kind appears.
	var kinds []int
	for b := 0; b < n; {
		if len(kinds) == 0 {
			kinds = []int{0, 2, 4, 6, 7, 8, 9}
			r.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
		}
		k := kinds[0]
		kinds = kinds[1:]
		run := min(1+r.IntN(80), n-b)
		if k >= 6 && k < 9 && r.IntN(3) == 0 {
			run = min(64+r.IntN(130), n-b) // long replace runs: full 256 KiB units
		}
		switch {
		case k < 2: // unmapped: target = base
			copy(tr.target[b*BlockSize:], tr.base[b*BlockSize:(b+run)*BlockSize])
			tr.unmapped += run
		case k < 4: // copy of a source run
			src := r.IntN(n - run + 1)
			copy(tr.target[b*BlockSize:], tr.source[src*BlockSize:(src+run)*BlockSize])
			must(w.AddCopy(uint64(b), uint64(src), uint64(run)))
			tr.counts[cow.OpCopy] += run
		case k < 6: // xor against an (often unaligned) source offset
			run = min(run, n-1)
			src := r.IntN(n - run)
			off := 0
			if r.IntN(2) == 0 {
				off = r.IntN(BlockSize)
			}
			srcBytes := tr.source[src*BlockSize+off : (src+run)*BlockSize+off]
			data := make([]byte, run*BlockSize)
			for i := range data {
				tb := srcBytes[i]
				if r.IntN(16) == 0 {
					tb = byte(r.Uint32())
				}
				tr.target[b*BlockSize+i] = tb
				data[i] = tb ^ srcBytes[i]
			}
			must(w.AddXorBlocks(uint64(b), data, uint64(src), uint16(off)))
			tr.counts[cow.OpXor] += run
		case k < 9: // replace
			for i := range run {
				fillBlock(r, blk(tr.target, b+i))
			}
			must(w.AddRawBlocks(uint64(b), tr.target[b*BlockSize:(b+run)*BlockSize]))
			tr.counts[cow.OpReplace] += run
		default: // zero
			clear(tr.target[b*BlockSize : (b+run)*BlockSize])
			must(w.AddZeroBlocks(uint64(b), uint64(run)))
			tr.counts[cow.OpZero] += run
		}
		b += run
	}
	must(w.Finalize())
	must(w.Close())
	tr.cow = f.b
	return tr
}

func (tr *triple) snapshot(t testing.TB) *Snapshot {
	t.Helper()
	s, err := NewSnapshot(tr.name, bytes.NewReader(tr.cow), int64(len(tr.cow)), bytes.NewReader(tr.source),
		bytes.NewReader(tr.base), int64(len(tr.base)), tr.name+".cow")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tripleSpecs() []tripleSpec {
	var specs []tripleSpec
	codecs := []cow.Compression{cow.CompressionNone, cow.CompressionGz, cow.CompressionBrotli, cow.CompressionLz4, cow.CompressionZstd}
	for _, c := range codecs {
		specs = append(specs, tripleSpec{version: 2, comp: c, blocks: 1024, seed: 11})
	}
	for _, c := range codecs {
		for _, f := range []uint32{4096, 64 << 10, 256 << 10} {
			specs = append(specs, tripleSpec{version: 3, comp: c, factor: f, blocks: 1024, seed: 12})
		}
	}
	return specs
}

// TestSnapshotDirect checks every block of every triple through the
// handler directly (no transport), including multi-block units.
func TestSnapshotDirect(t *testing.T) {
	for _, spec := range tripleSpecs() {
		t.Run(spec.String(), func(t *testing.T) {
			tr := genTriple(t, spec)
			s := tr.snapshot(t)
			got := make([]byte, len(tr.target))
			if err := s.ReadSectors(got, 0); err != nil {
				t.Fatal(err)
			}
			if i := firstDiff(got, tr.target); i >= 0 {
				t.Fatalf("full read differs at byte %d (block %d)", i, i/BlockSize)
			}
			if spec.version == 3 && spec.factor > BlockSize {
				multi := 0
				for _, op := range s.Reader().Ops() {
					if op.FactorShift > 0 {
						multi++
					}
				}
				if multi == 0 {
					t.Errorf("no multi-block replace ops generated")
				}
			}
			for _, typ := range []cow.OpType{cow.OpCopy, cow.OpXor, cow.OpReplace, cow.OpZero} {
				if tr.counts[typ] == 0 {
					t.Errorf("no %v blocks generated", typ)
				}
			}
			if tr.unmapped == 0 {
				t.Error("no unmapped blocks generated")
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}
