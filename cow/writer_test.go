package cow

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// patternBlock returns a deterministic, moderately compressible block.
func patternBlock(seed uint64) []byte { return testUnit(seed, DefaultBlockSize) }

func opAt(t *testing.T, img []byte, off int64) Op {
	t.Helper()
	if off+OpV2Size > int64(len(img)) {
		t.Fatalf("op at %#x beyond end of image (%#x)", off, len(img))
	}
	return DecodeOpV2(img[off:])
}

// writeLegacyExample writes the op sequence of AOSP `write_cow
// -write_legacy` (§2.10) with the v2 writer.
func writeLegacyExample(t testing.TB, f File, raw, xor []byte) *WriterV2 {
	t.Helper()
	w, err := NewWriterV2(f, WriterOptions{ClusterOps: 5, NumMergeOps: 1})
	if err != nil {
		t.Fatal(err)
	}
	steps := []func() error{
		func() error { return w.AddCopy(0, 5, 1) },
		func() error { return w.AddRawBlocks(2, raw) },
		func() error { return w.AddLabel(1) },
		func() error { return w.AddXorBlocks(50, xor, 24, 10) },
		func() error { return w.AddZeroBlocks(5, 10) },
		func() error { return w.AddLabel(2) },
		w.Finalize,
	}
	for i, s := range steps {
		if err := s(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	return w
}

// aospCowV2SHA256 is the SHA-256 of AOSP's tools/testdata/cow_v2 (§2.10).
const aospCowV2SHA256 = "afd7288855d0d9afd55e87910cc1886d7e73b97876cc4d15b85303d8027c8e2f"

// aospWriteCowData is the block write_cow uses for both its raw and its XOR
// block: "This is some data, believe it" padded with zeros to 4096 bytes.
func aospWriteCowData() []byte {
	d := make([]byte, 4096)
	copy(d, "This is some data, believe it")
	return d
}

// TestWorkedExampleV2 checks every offset of the §2.10 table and that the
// writer reproduces AOSP's genuine cow_v2 fixture bit for bit (same SHA-256)
// when given write_cow's data.
func TestWorkedExampleV2(t *testing.T) {
	raw, xor := aospWriteCowData(), aospWriteCowData()
	f := newMemFile(nil)
	w := writeLegacyExample(t, f, raw, xor)
	img := f.Bytes()
	if len(img) != 2105826 {
		t.Fatalf("file size %d, want 2,105,826", len(img))
	}
	if sum := fmt.Sprintf("%x", sha256.Sum256(img)); sum != aospCowV2SHA256 {
		t.Errorf("SHA-256 %s, want AOSP cow_v2's %s", sum, aospCowV2SHA256)
	}
	if w.Size() != int64(len(img)) {
		t.Errorf("Size() = %d after Finalize, file is %d", w.Size(), len(img))
	}
	want := []byte{0x21, 0x21, 0x57, 0x4f, 0x63, 0x77, 0x6f, 0x43, 2, 0, 0, 0, 38, 0, 84, 0, 20, 0, 0, 0x10, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0}
	if !bytes.Equal(img[:38], want) {
		t.Errorf("header = % x\nwant     % x", img[:38], want)
	}
	if !bytes.Equal(img[0x26:0x200026], make([]byte, 2<<20)) {
		t.Error("scratch region is not all zeros")
	}
	type rec struct {
		off int64
		op  Op
	}
	zero := func(b uint64) Op { return Op{Type: OpZero, NewBlock: b} }
	cluster := func(src uint64) Op { return Op{Type: OpCluster, Source: src} }
	table := []rec{
		{0x200026, Op{Type: OpCopy, NewBlock: 0, Source: 5}},
		{0x20003a, Op{Type: OpReplace, DataLength: 4096, NewBlock: 2, Source: 0x20008a}},
		{0x20004e, Op{Type: OpLabel, Source: 1}},
		{0x200062, Op{Type: OpXor, DataLength: 4096, NewBlock: 50, Source: 98314}},
		{0x200076, cluster(8192)},
		{0x20208a, zero(5)}, {0x20209e, zero(6)}, {0x2020b2, zero(7)}, {0x2020c6, zero(8)}, {0x2020da, cluster(0)},
		{0x2020ee, zero(9)}, {0x202102, zero(10)}, {0x202116, zero(11)}, {0x20212a, zero(12)}, {0x20213e, cluster(0)},
		{0x202152, zero(13)}, {0x202166, zero(14)}, {0x20217a, Op{Type: OpLabel, Source: 2}},
	}
	for i, r := range table {
		if got := opAt(t, img, r.off); got != r.op {
			t.Errorf("record %d at %#x: got %v, want %v", i, r.off, got, r.op)
		}
	}
	if !bytes.Equal(img[0x20008a:0x20108a], raw) {
		t.Error("Replace payload not at 0x20008a")
	}
	if !bytes.Equal(img[0x20108a:0x20208a], xor) {
		t.Error("Xor payload not at 0x20108a")
	}
	footer := AppendFooter(nil, Footer{OpsSize: 360, NumOps: 18})
	if !bytes.Equal(img[0x20218e:], footer) {
		t.Errorf("footer at 0x20218e = % x\nwant % x", img[0x20218e:], footer)
	}
	if f.syncs < 3 {
		t.Errorf("%d fsyncs; want one per label plus Finalize", f.syncs)
	}

	// The reader agrees (when it exists), including the XOR data cursor.
	r, err := f.reader(nil)
	if err != nil {
		t.Fatal(err)
	}
	if ft, ok := r.Footer(); !ok || ft.NumOps != 18 {
		t.Fatalf("footer %+v %v", ft, ok)
	}
	for i, op := range r.Ops() {
		if op.Type == OpXor {
			if off, err := r.DataOffset(&op); err != nil || off != 0x20108a {
				t.Errorf("xor op %d data at %#x (%v), want 0x20108a", i, off, err)
			}
		}
	}
}

// TestFinalizeContinue checks that Finalize can be called repeatedly and
// writing continues over the footer and the extra Cluster op.
func TestFinalizeContinue(t *testing.T) {
	for _, clusterOps := range []uint32{0, 2, 5, 1024} {
		t.Run(itoa(int(clusterOps)), func(t *testing.T) {
			opts := WriterOptions{ClusterOps: clusterOps, Unclustered: clusterOps == 0, NoScratch: true}
			once := newMemFile(nil)
			twice := newMemFile(nil)
			build := func(f *memFile, finalizeMidway bool) {
				w, err := NewWriterV2(f, opts)
				if err != nil {
					t.Fatal(err)
				}
				for i := range uint64(7) {
					if err := w.AddRawBlocks(i, patternBlock(i)); err != nil {
						t.Fatal(err)
					}
					if finalizeMidway {
						if err := w.Finalize(); err != nil {
							t.Fatal(err)
						}
						if w.Size() != f.Size() {
							t.Fatalf("Size() %d != file size %d after Finalize", w.Size(), f.Size())
						}
						if _, err := f.reader(nil); err != nil {
							t.Fatalf("intermediate finalized file does not parse: %v", err)
						}
					}
				}
				if err := w.AddZeroBlocks(100, 3); err != nil {
					t.Fatal(err)
				}
				if err := w.Finalize(); err != nil {
					t.Fatal(err)
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				if err := w.Close(); !errors.Is(err, ErrWriterClosed) {
					t.Fatalf("second Close: %v", err)
				}
			}
			build(once, false)
			build(twice, true)
			if !bytes.Equal(once.Bytes(), twice.Bytes()) {
				t.Fatal("repeated Finalize changed the final file")
			}
		})
	}
}

// TestV2CompressionStamp checks the per-op compression byte and the raw
// fallback rules (§2.4): lz4/zstd store an incompressible block raw but
// still name the algorithm; gz/brotli always compress.
func TestV2CompressionStamp(t *testing.T) {
	incompressible := randomBytes(11, 4096)
	compressible := patternBlock(3)
	for _, alg := range []Compression{CompressionNone, CompressionGz, CompressionBrotli, CompressionLz4, CompressionZstd} {
		t.Run(alg.String(), func(t *testing.T) {
			f := newMemFile(nil)
			w, err := NewWriterV2(f, WriterOptions{Compression: alg, NoScratch: true, ClusterOps: 4})
			if err != nil {
				t.Fatal(err)
			}
			if err := w.AddRawBlocks(0, append(append([]byte{}, compressible...), incompressible...)); err != nil {
				t.Fatal(err)
			}
			if err := w.AddCopy(9, 1, 1); err != nil {
				t.Fatal(err)
			}
			if err := w.Finalize(); err != nil {
				t.Fatal(err)
			}
			img := f.Bytes()
			ops := HeaderV2Size + int64(0)
			comp, incomp, cp := opAt(t, img, ops), opAt(t, img, ops+20), opAt(t, img, ops+40)
			if comp.Compression != alg || incomp.Compression != alg {
				t.Errorf("compression bytes %v, %v; want %v on every data op", comp.Compression, incomp.Compression, alg)
			}
			if cp.Compression != CompressionNone {
				t.Errorf("copy op carries compression %v", cp.Compression)
			}
			switch alg {
			case CompressionNone:
				if incomp.DataLength != 4096 || comp.DataLength != 4096 {
					t.Error("uncompressed data length is not 4096")
				}
			case CompressionLz4, CompressionZstd:
				if incomp.DataLength != 4096 {
					t.Errorf("incompressible block stored with %d bytes, want raw 4096", incomp.DataLength)
				}
				if comp.DataLength >= 4096 {
					t.Errorf("compressible block not compressed (%d)", comp.DataLength)
				}
			case CompressionGz, CompressionBrotli:
				if incomp.DataLength <= 4096 && alg == CompressionGz {
					t.Errorf("gz of random data is %d bytes; expected the stored-block overhead", incomp.DataLength)
				}
				dst := make([]byte, 4096)
				off := int64(incomp.Source)
				if _, err := Decompress(alg, dst, img[off:off+int64(incomp.DataLength)]); err != nil || !bytes.Equal(dst, incompressible) {
					t.Errorf("incompressible block not stored compressed: %v", err)
				}
			}
			r, err := f.reader(nil)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 4096)
			for i, want := range [][]byte{compressible, incompressible} {
				op := r.Ops()[i]
				if n, err := r.ReadData(&op, got, 0); err != nil || n != 4096 || !bytes.Equal(got, want) {
					t.Errorf("block %d read back wrong: n=%d err=%v", i, n, err)
				}
			}
		})
	}
}

// TestIncompressibleBlockGz reproduces AOSP's DecompressIncompressibleBlock
// (bug 310191184): a 4 KiB block whose zlib output is exactly 4096 bytes
// must be stored compressed by the v2 writer and read back correctly,
// although data_length equals the block size.
func TestIncompressibleBlockGz(t *testing.T) {
	block := findZlibExactBlock(t)
	f := newMemFile(nil)
	w, err := NewWriterV2(f, WriterOptions{Compression: CompressionGz, NoScratch: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddRawBlocks(0, block); err != nil {
		t.Fatal(err)
	}
	if err := w.Finalize(); err != nil {
		t.Fatal(err)
	}
	img := f.Bytes()
	op := opAt(t, img, HeaderV2Size)
	if op.DataLength != 4096 || op.Compression != CompressionGz {
		t.Fatalf("op %v: want gz with data_length 4096", op)
	}
	if bytes.Equal(img[op.Source:op.Source+4096], block) {
		t.Fatal("block stored raw")
	}
	r, err := f.reader(nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	rop := r.Ops()[0]
	if n, err := r.ReadData(&rop, got, 0); err != nil || n != 4096 || !bytes.Equal(got, block) {
		t.Fatalf("read back: n=%d err=%v equal=%v", n, err, bytes.Equal(got, block))
	}
}

// findZlibExactBlock builds a block whose zlib (level 9) output is exactly
// 4096 bytes: random bytes with a compressible prefix of tuned length.
func findZlibExactBlock(t *testing.T) []byte {
	t.Helper()
	c, err := NewCompressor(CompressionGz, 9, 4096)
	if err != nil {
		t.Fatal(err)
	}
	for seed := uint64(0); seed < 64; seed++ {
		rnd := randomBytes(99+seed, 4096)
		for k := 0; k < 200; k++ {
			b := bytes.Clone(rnd)
			clear(b[:k])
			out, err := c.Compress(nil, b)
			if err != nil {
				t.Fatal(err)
			}
			if len(out) == 4096 {
				return b
			}
			if len(out) < 4096 {
				break
			}
		}
	}
	t.Fatal("no block with a 4096-byte zlib stream found")
	return nil
}

func TestWriterOptionErrors(t *testing.T) {
	tests := []struct {
		name string
		v3   bool
		opts WriterOptions
	}{
		{"cluster_ops 1", false, WriterOptions{ClusterOps: 1}},
		{"block size 65536 v2", false, WriterOptions{BlockSize: 65536}},
		{"block size not power of two", false, WriterOptions{BlockSize: 5000}},
		{"snappy without allow", false, WriterOptions{Compression: CompressionSnappy}},
		{"xz without allow v3", true, WriterOptions{Compression: CompressionXz, OpCountMax: 10}},
		{"unknown algorithm", false, WriterOptions{Compression: 9}},
		{"bad gz level", false, WriterOptions{Compression: CompressionGz, CompressionLevel: 12, CompressionLevelSet: true}},
		{"v3 no op_count_max", true, WriterOptions{}},
		{"v3 factor 3 blocks", true, WriterOptions{OpCountMax: 10, CompressionFactor: 12288}},
		{"v3 factor 512K", true, WriterOptions{OpCountMax: 10, CompressionFactor: 512 << 10}},
		{"v3 factor below block", true, WriterOptions{OpCountMax: 10, CompressionFactor: 2048}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.v3 {
				_, err = NewWriterV3(newMemFile(nil), tt.opts)
			} else {
				_, err = NewWriterV2(newMemFile(nil), tt.opts)
			}
			if err == nil {
				t.Fatal("accepted")
			}
		})
	}
	// Extensions are accepted when allowed.
	if _, err := NewWriterV2(newMemFile(nil), WriterOptions{Compression: CompressionSnappy, AllowNonstandard: true}); err != nil {
		t.Fatal(err)
	}
}

func TestWriterInputErrors(t *testing.T) {
	for _, v3 := range []bool{false, true} {
		name := "v2"
		if v3 {
			name = "v3"
		}
		t.Run(name, func(t *testing.T) {
			newW := func() Writer {
				var w Writer
				var err error
				if v3 {
					w, err = NewWriterV3(newMemFile(nil), WriterOptions{MaxBlocks: 100, NoScratch: true})
				} else {
					w, err = NewWriterV2(newMemFile(nil), WriterOptions{MaxBlocks: 100, NoScratch: true})
				}
				if err != nil {
					t.Fatal(err)
				}
				return w
			}
			w := newW()
			if err := w.AddRawBlocks(0, make([]byte, 100)); err == nil {
				t.Error("partial block accepted")
			}
			if err := w.AddZeroBlocks(99, 2); err == nil {
				t.Error("block beyond max_blocks accepted")
			}
			if err := w.AddCopy(1<<32, 0, 1); err == nil {
				t.Error("new block ≥ 2^32 accepted")
			}
			if err := w.AddXorBlocks(0, make([]byte, 4096), 1, 4096); err == nil {
				t.Error("xor offset = block size accepted")
			}
			if err := w.AddCopy(0, 1<<48, 1); err == nil {
				t.Error("source block ≥ 2^48 accepted")
			}
			// Input errors are not sticky; the writer still works.
			if err := w.AddZeroBlocks(0, 1); err != nil {
				t.Fatal(err)
			}
			if err := w.AddSequenceData([]uint32{0}); err == nil {
				t.Error("sequence data after a data op accepted")
			}
			if err := w.Finalize(); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if err := w.AddZeroBlocks(1, 1); !errors.Is(err, ErrWriterClosed) {
				t.Errorf("write after Close: %v", err)
			}
		})
	}
}

// TestStickyError injects a write failure at every WriteAt in turn: the
// failure must surface, stay sticky, and never panic.
func TestStickyError(t *testing.T) {
	for _, v3 := range []bool{false, true} {
		for n := 1; ; n++ {
			f := newMemFile(nil)
			f.failWriteAt = n
			var w Writer
			var err error
			if v3 {
				w, err = NewWriterV3(f, WriterOptions{OpCountMax: 64, NoScratch: true, BatchSize: 2})
			} else {
				w, err = NewWriterV2(f, WriterOptions{ClusterOps: 3, NoScratch: true})
			}
			if err != nil {
				if !errors.Is(err, errInjected) {
					t.Fatalf("v3=%v n=%d: constructor error %v", v3, n, err)
				}
				continue
			}
			var first error
			for _, step := range []func() error{
				func() error { return w.AddRawBlocks(0, make([]byte, 3*4096)) },
				func() error { return w.AddLabel(1) },
				func() error { return w.AddZeroBlocks(5, 3) },
				w.Finalize,
			} {
				if err := step(); err != nil && first == nil {
					first = err
				}
			}
			if first == nil {
				if n < 3 {
					t.Fatalf("v3=%v: injection %d had no effect", v3, n)
				}
				break // every write point covered
			}
			if !errors.Is(first, errInjected) {
				t.Fatalf("v3=%v n=%d: error %v is not the injected one", v3, n, first)
			}
			if err := w.AddZeroBlocks(9, 1); !errors.Is(err, errInjected) {
				t.Fatalf("v3=%v n=%d: error not sticky: %v", v3, n, err)
			}
		}
	}
}

// TestWriterOsFile writes to a real file through *os.File and reads it back.
func TestWriterOsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.cow")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := writeLegacyExample(t, f, patternBlock(1), patternBlock(2))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Size() != 2105826 {
		t.Fatalf("size %d", r.Size())
	}
	// Reopen for append at label 1 through the *os.File.
	w2, err := OpenWriterV2(f, WriterOptions{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := w2.AddZeroBlocks(7, 1); err != nil {
		t.Fatal(err)
	}
	if err := w2.Finalize(); err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	if fi.Size() != w2.Size() {
		t.Fatalf("file %d bytes, Size() %d", fi.Size(), w2.Size())
	}
}

// TestV3Layout checks the v3 regions byte by byte for a small file.
func TestV3Layout(t *testing.T) {
	f := newMemFile(nil)
	w, err := NewWriterV3(f, WriterOptions{OpCountMax: 8, CompressionFactor: 16384, NoScratch: true})
	if err != nil {
		t.Fatal(err)
	}
	seq := []uint32{7, 3}
	if err := w.AddSequenceData(seq); err != nil {
		t.Fatal(err)
	}
	data := testUnit(4, 5*4096)
	steps := []func() error{
		func() error { return w.AddCopy(7, 1, 1) },
		func() error { return w.AddCopy(3, 2, 1) },
		func() error { return w.AddLabel(10) },
		func() error { return w.AddRawBlocks(20, data) }, // 16K + 4K units
		func() error { return w.AddXorBlocks(30, data[:4096], 5, 100) },
		func() error { return w.AddZeroBlocks(40, 1) },
		w.Finalize,
	}
	for i, s := range steps {
		if err := s(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	img := f.Bytes()
	const seqOff = HeaderV3Size
	resOff := int64(seqOff + 8)
	opsOff := resOff + 4*16
	dataOff := opsOff + 8*16
	h := decodeHeader(img)
	if h.MajorVersion != 3 || h.HeaderSize != 78 || h.OpSize != 16 || h.FooterSize != 0 || h.ClusterOps != 0 ||
		h.SequenceDataCount != 2 || h.ResumePointCount != 1 || h.ResumePointMax != 4 || h.OpCount != 6 ||
		h.OpCountMax != 8 || h.MaxCompressionSize != 16384 || h.BufferSize != 0 {
		t.Fatalf("header %+v", h)
	}
	if binary.LittleEndian.Uint32(img[seqOff:]) != 7 || binary.LittleEndian.Uint32(img[seqOff+4:]) != 3 {
		t.Error("sequence region")
	}
	if rp := DecodeResumePoint(img[resOff:]); rp != (ResumePoint{10, 2}) {
		t.Errorf("resume point %+v", rp)
	}
	wantOps := []Op{
		{Type: OpCopy, NewBlock: 7, Source: 1},
		{Type: OpCopy, NewBlock: 3, Source: 2},
		{Type: OpReplace, NewBlock: 20, Source: uint64(dataOff), DataLength: 16384, FactorShift: 2},
		{Type: OpReplace, NewBlock: 24, Source: uint64(dataOff) + 16384, DataLength: 4096},
		{Type: OpXor, NewBlock: 30, Source: 5*4096 + 100, DataLength: 4096},
		{Type: OpZero, NewBlock: 40},
	}
	for i, want := range wantOps {
		if got := DecodeOpV3(img[opsOff+int64(i)*16:]); got != want {
			t.Errorf("op %d = %v, want %v", i, got, want)
		}
	}
	if !bytes.Equal(img[dataOff:dataOff+20480], data) || !bytes.Equal(img[dataOff+20480:], data[:4096]) {
		t.Error("data region")
	}
	if int64(len(img)) != dataOff+6*4096 || w.Size() != int64(len(img)) {
		t.Errorf("size %d, Size() %d", len(img), w.Size())
	}
}

// TestV3Capacity checks op_count_max: a call that would exceed it fails and
// adds nothing.
func TestV3Capacity(t *testing.T) {
	f := newMemFile(nil)
	w, err := NewWriterV3(f, WriterOptions{OpCountMax: 4, NoScratch: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddZeroBlocks(0, 3); err != nil {
		t.Fatal(err)
	}
	if err := w.AddRawBlocks(10, make([]byte, 2*4096)); !errors.Is(err, ErrCapacity) {
		t.Fatalf("err = %v, want ErrCapacity", err)
	}
	if err := w.AddCopy(5, 5, 1); err != nil {
		t.Fatal(err)
	}
	if err := w.AddCopy(6, 6, 1); !errors.Is(err, ErrCapacity) {
		t.Fatalf("err = %v", err)
	}
	if err := w.Finalize(); err != nil {
		t.Fatal(err)
	}
	if h := decodeHeader(f.Bytes()); h.OpCount != 4 {
		t.Fatalf("op_count %d", h.OpCount)
	}
}

// TestV3ResumePointQuirk checks §3.4: resume_point_count grows without
// bound, only the newest resume_point_max entries are kept, and labels ≥ a
// new label are dropped first (only the live entries are rewritten).
func TestV3ResumePointQuirk(t *testing.T) {
	f := newMemFile(nil)
	w, err := NewWriterV3(f, WriterOptions{OpCountMax: 64, NoScratch: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range uint64(10) {
		if err := w.AddZeroBlocks(i, 1); err != nil {
			t.Fatal(err)
		}
		if err := w.AddLabel(i); err != nil {
			t.Fatal(err)
		}
	}
	// Re-emitting label 8 drops 8 and 9.
	if err := w.AddLabel(8); err != nil {
		t.Fatal(err)
	}
	img := f.Bytes()
	h := decodeHeader(img)
	if h.ResumePointCount != 11 {
		t.Errorf("resume_point_count %d, want 11 (unbounded)", h.ResumePointCount)
	}
	var got []ResumePoint
	for i := range int64(4) {
		got = append(got, DecodeResumePoint(img[h.ResumeOffset()+16*i:]))
	}
	// Only the three live entries are rewritten; the fourth slot keeps the
	// stale {9, 10}, as AOSP leaves it.
	want := []ResumePoint{{6, 7}, {7, 8}, {8, 10}, {9, 10}}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("resume points %v, want %v", got, want)
		}
	}
	// The reader finds label 6 and yields its 7 ops.
	r, err := f.reader(labelOpt(6))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Ops()) != 7 {
		t.Fatalf("%d ops at label 6", len(r.Ops()))
	}
}

// TestV3UnlabeledOpsInvisible: ops flushed after the last header commit are
// not visible (header.op_count changes only on Label/Finalize, §3.5).
func TestV3UnlabeledOpsInvisible(t *testing.T) {
	f := newMemFile(nil)
	w, err := NewWriterV3(f, WriterOptions{OpCountMax: 64, NoScratch: true, BatchSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddZeroBlocks(0, 2); err != nil {
		t.Fatal(err)
	}
	if err := w.AddLabel(1); err != nil {
		t.Fatal(err)
	}
	if err := w.AddRawBlocks(5, patternBlock(1)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := f.reader(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Ops()) != 2 {
		t.Fatalf("%d ops visible, want 2", len(r.Ops()))
	}
}

// TestDeviceSkipsTruncate: on a device the writers never call Truncate
// (which fails on devices); detection goes through Stat.
func TestDeviceSkipsTruncate(t *testing.T) {
	f, err := os.OpenFile("/dev/null", os.O_RDWR, 0)
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	if !isDevice(f) {
		t.Fatal("/dev/null not detected as a device")
	}
	if err := f.Truncate(0); err == nil {
		t.Log("Truncate on /dev/null succeeded; the check below is weaker")
	}
	if err := truncateFile(f, 12345); err != nil {
		t.Fatalf("truncateFile on a device: %v", err)
	}
	if isDevice(newMemFile(nil)) {
		t.Fatal("memFile detected as a device")
	}
}

func benchmarkWriter(b *testing.B, v3 bool, alg Compression) {
	const blocks = 4096 // 16 MiB per iteration
	data := make([]byte, 0, blocks*4096)
	for i := range uint64(blocks) {
		data = append(data, testUnit(i, 4096)...)
	}
	b.SetBytes(int64(len(data)))
	dir := b.TempDir()
	for i := 0; b.Loop(); i++ {
		f, err := os.Create(filepath.Join(dir, "b.cow"))
		if err != nil {
			b.Fatal(err)
		}
		opts := WriterOptions{Compression: alg, CompressionFactor: 65536, MaxBlocks: 1 << 20}
		var w Writer
		if v3 {
			w, err = NewWriterV3(f, opts)
		} else {
			w, err = NewWriterV2(f, opts)
		}
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < len(data); off += 64 * 4096 {
			if err := w.AddRawBlocks(uint64(off/4096), data[off:off+64*4096]); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Finalize(); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

func BenchmarkWriterV2None(b *testing.B) { benchmarkWriter(b, false, CompressionNone) }
func BenchmarkWriterV2Lz4(b *testing.B)  { benchmarkWriter(b, false, CompressionLz4) }
func BenchmarkWriterV3None(b *testing.B) { benchmarkWriter(b, true, CompressionNone) }
func BenchmarkWriterV3Lz4(b *testing.B)  { benchmarkWriter(b, true, CompressionLz4) }

// TestV3RawIffNotSmaller: in v3 every algorithm, gz and brotli included,
// stores a unit raw (data_length == unit) when compression does not shrink
// it (§3.2), and compressed otherwise.
func TestV3RawIffNotSmaller(t *testing.T) {
	for _, alg := range []Compression{CompressionGz, CompressionBrotli, CompressionLz4, CompressionZstd} {
		t.Run(alg.String(), func(t *testing.T) {
			f := newMemFile(nil)
			w, err := NewWriterV3(f, WriterOptions{Compression: alg, CompressionFactor: 8192, OpCountMax: 8, NoScratch: true,
				CompressionLevel: 1, CompressionLevelSet: alg == CompressionBrotli})
			if err != nil {
				t.Fatal(err)
			}
			random := randomBytes(5, 8192)
			text := testUnit(6, 8192)
			if err := w.AddRawBlocks(0, append(bytes.Clone(random), text...)); err != nil {
				t.Fatal(err)
			}
			if err := w.Finalize(); err != nil {
				t.Fatal(err)
			}
			img := f.Bytes()
			h := decodeHeader(img)
			raw, comp := DecodeOpV3(img[h.OpOffset(0):]), DecodeOpV3(img[h.OpOffset(1):])
			if raw.DataLength != 8192 || !bytes.Equal(img[raw.Source:raw.Source+8192], random) {
				t.Errorf("incompressible unit: data_length %d, not stored raw", raw.DataLength)
			}
			if comp.DataLength >= 8192 {
				t.Errorf("compressible unit stored with %d bytes", comp.DataLength)
			}
			r, err := f.reader(nil)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4096)
			for i, want := range [][]byte{random, text} {
				for k := range 2 {
					if _, err := r.ReadOpData(i, buf, k*4096); err != nil || !bytes.Equal(buf, want[k*4096:(k+1)*4096]) {
						t.Fatalf("op %d block %d: %v", i, k, err)
					}
				}
			}
		})
	}
}
