package snapuserdtest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vabc-go/vabc/cow"
)

const blockSize = 4096

// MemFile is an in-memory cow.File.
type MemFile struct {
	mu sync.Mutex
	b  []byte
}

func (m *MemFile) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= int64(len(m.b)) {
		return 0, fmt.Errorf("MemFile: read at %d beyond %d", off, len(m.b))
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, fmt.Errorf("MemFile: short read")
	}
	return n, nil
}

func (m *MemFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if need := off + int64(len(p)); need > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, need-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

func (m *MemFile) Sync() error { return nil }
func (m *MemFile) Truncate(n int64) error {
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
type Triple struct {
	Name         string
	Base, Source []byte
	Target       []byte
	Cow          []byte
	Counts       map[cow.OpType]int
	Unmapped     int
}

type TripleSpec struct {
	Version int // 2 or 3
	Comp    cow.Compression
	Factor  uint32 // v3 compression factor
	Blocks  int
	Seed    uint64
	// NoScratch omits the 2 MiB scratch region (small images for fuzz seeds).
	NoScratch bool
}

func (s TripleSpec) String() string {
	if s.Version == 2 {
		return fmt.Sprintf("v2-%v", s.Comp)
	}
	return fmt.Sprintf("v3-%v-%dK", s.Comp, s.Factor/1024)
}

// FillBlock writes semi-compressible bytes (text-like runs plus noise).
func FillBlock(r *rand.Rand, b []byte) {
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

// GenTriple builds source and base images, then a target from runs of
// unmapped, Copy, Xor (aligned and unaligned source offsets), Replace (runs
// long enough for 256 KiB units) and Zero blocks, and writes the COW with
// the requested writer.
func GenTriple(t testing.TB, spec TripleSpec) *Triple {
	t.Helper()
	r := rand.New(rand.NewPCG(spec.Seed, uint64(spec.Version)<<8|uint64(spec.Comp)))
	n := spec.Blocks
	size := n * blockSize
	tr := &Triple{Name: spec.String(), Base: make([]byte, size), Source: make([]byte, size), Target: make([]byte, size), Counts: map[cow.OpType]int{}}
	for b := range n {
		FillBlock(r, tr.Base[b*blockSize:(b+1)*blockSize])
		FillBlock(r, tr.Source[b*blockSize:(b+1)*blockSize])
	}
	f := &MemFile{}
	opts := cow.WriterOptions{Compression: spec.Comp, MaxBlocks: uint64(n), NoScratch: spec.NoScratch}
	if spec.Comp == cow.CompressionBrotli || spec.Comp == cow.CompressionGz {
		// Fast levels keep the generator quick; the decoder is what is tested.
		opts.CompressionLevel, opts.CompressionLevelSet = 1, true
	}
	var w cow.Writer
	var err error
	if spec.Version == 2 {
		w, err = cow.NewWriterV2(f, opts)
	} else {
		opts.CompressionFactor = spec.Factor
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
	blk := func(img []byte, b int) []byte { return img[b*blockSize : (b+1)*blockSize] }
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
			copy(tr.Target[b*blockSize:], tr.Base[b*blockSize:(b+run)*blockSize])
			tr.Unmapped += run
		case k < 4: // copy of a source run
			src := r.IntN(n - run + 1)
			copy(tr.Target[b*blockSize:], tr.Source[src*blockSize:(src+run)*blockSize])
			must(w.AddCopy(uint64(b), uint64(src), uint64(run)))
			tr.Counts[cow.OpCopy] += run
		case k < 6: // xor against an (often unaligned) source offset
			run = min(run, n-1)
			src := r.IntN(n - run)
			off := 0
			if r.IntN(2) == 0 {
				off = r.IntN(blockSize)
			}
			srcBytes := tr.Source[src*blockSize+off : (src+run)*blockSize+off]
			data := make([]byte, run*blockSize)
			for i := range data {
				tb := srcBytes[i]
				if r.IntN(16) == 0 {
					tb = byte(r.Uint32())
				}
				tr.Target[b*blockSize+i] = tb
				data[i] = tb ^ srcBytes[i]
			}
			must(w.AddXorBlocks(uint64(b), data, uint64(src), uint16(off)))
			tr.Counts[cow.OpXor] += run
		case k < 9: // replace
			for i := range run {
				FillBlock(r, blk(tr.Target, b+i))
			}
			must(w.AddRawBlocks(uint64(b), tr.Target[b*blockSize:(b+run)*blockSize]))
			tr.Counts[cow.OpReplace] += run
		default: // zero
			clear(tr.Target[b*blockSize : (b+run)*blockSize])
			must(w.AddZeroBlocks(uint64(b), uint64(run)))
			tr.Counts[cow.OpZero] += run
		}
		b += run
	}
	must(w.Finalize())
	must(w.Close())
	tr.Cow = f.b
	return tr
}

// Specs lists the triples the tests cover: v2 with every AOSP codec, and v3
// with every codec at compression factors 4, 64 and 256 KiB.
func Specs(blocks int) []TripleSpec {
	var specs []TripleSpec
	codecs := []cow.Compression{cow.CompressionNone, cow.CompressionGz, cow.CompressionBrotli, cow.CompressionLz4, cow.CompressionZstd}
	for _, c := range codecs {
		specs = append(specs, TripleSpec{Version: 2, Comp: c, Blocks: blocks, Seed: 11})
	}
	for _, c := range codecs {
		for _, f := range []uint32{4096, 64 << 10, 256 << 10} {
			specs = append(specs, TripleSpec{Version: 3, Comp: c, Factor: f, Blocks: blocks, Seed: 12})
		}
	}
	return specs
}

// Files are a triple written to disk.
type Files struct {
	Cow, Source, Base, Target string
}

// WriteFiles writes the triple's images into dir.
func (tr *Triple) WriteFiles(t testing.TB, dir string) Files {
	t.Helper()
	f := Files{Cow: filepath.Join(dir, "system.cow"), Source: filepath.Join(dir, "source.img"),
		Base: filepath.Join(dir, "base.img"), Target: filepath.Join(dir, "target.img")}
	for _, w := range []struct {
		p string
		b []byte
	}{{f.Cow, tr.Cow}, {f.Source, tr.Source}, {f.Base, tr.Base}, {f.Target, tr.Target}} {
		if err := os.WriteFile(w.p, w.b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return f
}
