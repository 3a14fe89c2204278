package cow

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz seed corpora of the reader fuzz targets")

// Seeds shared by the fuzz targets and by TestFuzzSeedsUpToDate.

func seedHeaders(t testing.TB) [][]byte {
	var out [][]byte
	for _, h := range []Header{hdrV1(0), hdrV2(1024, 1<<21), newV3Header(100, CompressionLz4, 1<<21)} {
		b, err := h.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func seedV2(t testing.TB) [][]byte {
	var out [][]byte
	// The worked example without its 2 MiB scratch region.
	h := hdrV2(5, 0)
	h.NumMergeOps = 1
	bl := newV2Builder(t, h)
	bl.add(Op{Type: OpCopy, NewBlock: 0, Source: 5}, nil)
	bl.add(Op{Type: OpReplace, NewBlock: 2}, []byte("replace payload"))
	bl.add(Op{Type: OpLabel, Source: 1}, nil)
	bl.add(Op{Type: OpXor, NewBlock: 50, Source: 98314}, []byte("xor payload"))
	for nb := uint64(5); nb <= 14; nb++ {
		bl.add(Op{Type: OpZero, NewBlock: nb}, nil)
	}
	bl.add(Op{Type: OpLabel, Source: 2}, nil)
	out = append(out, bl.finalize())

	// Sequence ops, lz4 payloads, clustered.
	bl = newV2Builder(t, hdrV2(4, 0))
	bl.add(Op{Type: OpSequence}, seqPayload(3, 4))
	bl.add(Op{Type: OpCopy, NewBlock: 3, Source: 4}, nil)
	bl.add(Op{Type: OpCopy, NewBlock: 4, Source: 5}, nil)
	c, err := NewCompressor(CompressionLz4, 0, 4096)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Compress(nil, bytes.Repeat([]byte("ab"), 2048))
	if err != nil {
		t.Fatal(err)
	}
	bl.add(Op{Type: OpReplace, NewBlock: 9, Compression: CompressionLz4}, p)
	bl.add(Op{Type: OpLabel, Source: 7}, nil)
	out = append(out, bl.finalize())

	// v1, unclustered, with an unfinished tail.
	bl = newV2Builder(t, hdrV1(0))
	bl.add(Op{Type: OpReplace, NewBlock: 1}, []byte{1, 2, 3, 4})
	bl.add(Op{Type: OpLabel, Source: 3}, nil)
	bl.add(Op{Type: OpZero, NewBlock: 2}, nil)
	out = append(out, bl.bytes())
	return out
}

func seedV3(t testing.TB) [][]byte {
	var out [][]byte
	v := &v3Image{
		h:      newV3Header(8, CompressionNone, 0),
		seq:    []uint32{5},
		resume: []ResumePoint{{Label: 1, OpIndex: 2}, {Label: 2, OpIndex: 4}},
		ops: []Op{
			{Type: OpCopy, NewBlock: 5, Source: 1},
			{Type: OpXor, NewBlock: 6, Source: 4096*2 + 7},
			{Type: OpReplace, NewBlock: 7},
			{Type: OpZero, NewBlock: 8},
		},
		data: [][]byte{nil, []byte("xor"), []byte("replace")},
	}
	v.h.ResumePointCount = 9
	out = append(out, v.build(t))
	c, err := NewCompressor(CompressionZstd, 3, 16384)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Compress(nil, bytes.Repeat([]byte("zstd"), 4096))
	if err != nil {
		t.Fatal(err)
	}
	v = &v3Image{h: newV3Header(2, CompressionZstd, 0),
		ops:  []Op{{Type: OpReplace, NewBlock: 0, FactorShift: 2}},
		data: [][]byte{p}}
	out = append(out, v.build(t))
	return out
}

// exercise runs every read-side API on a parsed reader and checks the
// invariants that must hold for any accepted input.
func exercise(t *testing.T, r *Reader) {
	ops := r.Ops()
	for i := range ops {
		if off := r.OpOffset(i); off < int64(r.Header().HeaderSize) || off >= r.Size() {
			t.Fatalf("op %d offset %#x outside file", i, off)
		}
		if ops[i].NewBlock > 1<<32-1 {
			t.Fatalf("op %d new_block %d", i, ops[i].NewBlock)
		}
		if ops[i].Type == OpReplace || ops[i].Type == OpXor {
			buf := make([]byte, 512)
			r.ReadOpData(i, buf, 100)
		}
	}
	if err := r.Describe(io.Discard); err != nil {
		t.Fatal(err)
	}
	mo, mi := r.MergeOrder(), r.MergeIndex()
	if len(mo) != len(mi) {
		t.Fatal("merge order and index differ")
	}
	for k, j := range mi {
		if j < 0 || j >= len(ops) || ops[j] != mo[k] || ops[j].Type.IsMetadata() && r.Header().MajorVersion < 3 {
			t.Fatalf("merge step %d → op %d invalid", k, j)
		}
	}
	if r.opts.Label != nil {
		if len(mo) != 0 {
			t.Fatal("merge order prepared at a label")
		}
		return
	}
	if err := r.VerifyMergeOps(); err != nil && !errors.Is(err, ErrMergeOrder) {
		t.Fatalf("VerifyMergeOps: %v", err)
	}
	if l, ok := r.LastLabel(); ok && r.Header().MajorVersion < 3 {
		// Re-parsing at the last label must work and yield a prefix.
		r2, err := NewReader(r.ra, r.size, &ReaderOptions{Label: &l})
		if err != nil {
			t.Fatalf("reparse at last label %d: %v", l, err)
		}
		if len(r2.Ops()) > len(ops) {
			t.Fatal("label parse yields more ops")
		}
		for i := range r2.Ops() {
			if r2.Ops()[i] != ops[i] {
				t.Fatalf("label parse op %d differs", i)
			}
		}
	}
}

func fuzzParse(t *testing.T, data []byte, label uint64, flags uint8) {
	var opts ReaderOptions
	if flags&1 != 0 {
		opts.Label = &label
	}
	opts.Legacy = flags&2 != 0
	r, err := NewReader(bytes.NewReader(data), int64(len(data)), &opts)
	if err != nil {
		var fe *FormatError
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNoFooter) && !errors.Is(err, ErrLabelNotFound) && !errors.As(err, &fe) {
			t.Fatalf("error of unexpected kind: %v", err)
		}
		return
	}
	exercise(t, r)
}

func FuzzHeader(f *testing.F) {
	for _, s := range seedHeaders(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ReadHeader(bytes.NewReader(data))
		if err != nil {
			return
		}
		if h.HeaderSize > HeaderV3Size || h.HeaderSize < PrefixSize {
			t.Fatalf("accepted header_size %d", h.HeaderSize)
		}
		switch h.HeaderSize {
		case HeaderV1Size, HeaderV2Size, HeaderV3Size:
			b, err := h.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, data[:h.HeaderSize]) {
				t.Fatal("header does not re-encode to its bytes")
			}
		}
		// A header-only image must never parse into something odd.
		fuzzParse(t, data, 0, 0)
	})
}

func FuzzParseV2(f *testing.F) {
	for _, s := range seedV2(f) {
		f.Add(s, uint64(2), uint8(0))
		f.Add(s, uint64(1), uint8(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, label uint64, flags uint8) {
		// Keep the fuzzer on the v1/v2 parser: force a v2 prefix.
		if len(data) >= PrefixSize {
			data = bytes.Clone(data)
			putPrefix(data, 1+uint16(flags>>7))
		}
		fuzzParse(t, data, label, flags)
	})
}

func FuzzParseV3(f *testing.F) {
	for _, s := range seedV3(f) {
		f.Add(s, uint64(1), uint8(0))
		f.Add(s, uint64(2), uint8(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, label uint64, flags uint8) {
		if len(data) >= PrefixSize {
			data = bytes.Clone(data)
			putPrefix(data, 3)
		}
		fuzzParse(t, data, label, flags)
	})
}

// putPrefix writes magic and major_version, leaving the rest to the fuzzer.
func putPrefix(b []byte, major uint16) {
	w := writeBuf(b[:10])
	w.uint64(Magic)
	w.uint16(major)
}

// TestFuzzSeedsUpToDate keeps testdata/fuzz in sync with the seed builders
// (rewrite with go test ./cow -run FuzzSeeds -update-seeds).
func TestFuzzSeedsUpToDate(t *testing.T) {
	sets := map[string][]string{}
	for _, s := range seedHeaders(t) {
		sets["FuzzHeader"] = append(sets["FuzzHeader"], corpusEntry(fmt.Sprintf("[]byte(%q)", s)))
	}
	for _, s := range seedV2(t) {
		sets["FuzzParseV2"] = append(sets["FuzzParseV2"], corpusEntry(fmt.Sprintf("[]byte(%q)", s), "uint64(2)", "byte('\\x00')"))
	}
	for _, s := range seedV3(t) {
		sets["FuzzParseV3"] = append(sets["FuzzParseV3"], corpusEntry(fmt.Sprintf("[]byte(%q)", s), "uint64(1)", "byte('\\x01')"))
	}
	for name, entries := range sets {
		dir := filepath.Join("testdata", "fuzz", name)
		for i, e := range entries {
			p := filepath.Join(dir, fmt.Sprintf("seed-%d", i))
			if *updateSeeds {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(e), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(p)
			if err != nil || string(got) != e {
				t.Errorf("%s is missing or stale (run with -update-seeds): %v", p, err)
			}
		}
	}
}

func corpusEntry(vals ...string) string {
	s := "go test fuzz v1\n"
	for _, v := range vals {
		s += v + "\n"
	}
	return s
}
