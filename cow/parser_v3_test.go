package cow

import (
	"bytes"
	"compress/zlib"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

func v3Basic() *v3Image {
	return &v3Image{
		h: newV3Header(10, CompressionNone, 1<<21),
		ops: []Op{
			{Type: OpCopy, NewBlock: 5, Source: 1},
			{Type: OpXor, NewBlock: 6, Source: 4096*2 + 7},
			{Type: OpReplace, NewBlock: 7},
			{Type: OpZero, NewBlock: 8},
			{Type: OpReplace, NewBlock: 16, FactorShift: 2},
		},
		data: [][]byte{nil, block('x'), block('r'), nil, bytes.Repeat([]byte{'m'}, 16384)},
	}
}

func TestV3Parse(t *testing.T) {
	v := v3Basic()
	b := v.build(t)
	r := mustParse(t, b, nil)
	h := r.Header()
	ops := r.Ops()
	if len(ops) != 5 {
		t.Fatalf("%d ops", len(ops))
	}
	data := h.DataOffset()
	if data != 78+1<<21+4*16+10*16 {
		t.Fatalf("DATA at %#x", data)
	}
	for i := range ops {
		if r.OpOffset(i) != h.OpOffset(uint64(i)) {
			t.Fatalf("op %d offset", i)
		}
	}
	if off, err := r.DataOffset(&ops[1]); err != nil || off != data {
		t.Fatalf("xor at %#x %v", off, err)
	}
	if ops[2].Source != uint64(data+4096) || ops[4].Source != uint64(data+8192) || ops[4].Blocks() != 4 {
		t.Fatalf("replace sources %v %v", ops[2], ops[4])
	}
	if r.DataCursor() != int64(len(b)) || r.EndOffset() != h.OpOffset(5) {
		t.Fatalf("cursor %#x end %#x", r.DataCursor(), r.EndOffset())
	}
	buf := make([]byte, 16384)
	if n, err := r.ReadOpData(4, buf, 0); err != nil || n != 16384 || buf[16383] != 'm' {
		t.Fatalf("multi-block read %d %v", n, err)
	}
	// v3 without sequence data: every op in file order.
	if got := newBlocks(r.MergeOrder()); !slices.Equal(got, []uint64{5, 6, 7, 8, 16}) {
		t.Fatalf("merge order %v", got)
	}
	if r.NumOrderedOpsToMerge() != 5 {
		t.Fatalf("ordered to merge %d", r.NumOrderedOpsToMerge())
	}
}

func TestV3HeaderChecks(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Header)
	}{
		{"footer_size", func(h *Header) { h.FooterSize = 84 }},
		{"op_size", func(h *Header) { h.OpSize = 20 }},
		{"cluster_ops", func(h *Header) { h.ClusterOps = 2 }},
		{"minor", func(h *Header) { h.MinorVersion = 1 }},
		{"compression", func(h *Header) { h.CompressionAlgorithm = 77 }},
		{"op_count_gt_max", func(h *Header) { h.OpCount = 11 }},
		{"op_count_max_huge", func(h *Header) { h.OpCountMax = 1 << 60; h.OpCount = 1 << 59 }},
		{"op_region_truncated", func(h *Header) { h.OpCountMax = 1 << 30; h.OpCount = 1 << 29 }},
		{"resume_max_huge", func(h *Header) { h.ResumePointMax = 1 << 31 }},
		{"scratch_huge", func(h *Header) { h.BufferSize = 1<<32 - 1 }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := v3Basic()
			b := v.build(t)
			h := v.h
			h.SequenceDataCount, h.OpCount = 0, 5
			c.mod(&h)
			hb, _ := h.MarshalBinary()
			copy(b, hb)
			if _, err := parseBytes(t, b, nil); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("want ErrCorrupt, got %v", err)
			}
		})
	}
	t.Run("sequence_count_huge", func(t *testing.T) {
		v := v3Basic()
		b := v.build(t)
		h := v.h
		h.OpCount = 5
		h.SequenceDataCount = 1 << 62
		hb, _ := h.MarshalBinary()
		copy(b, hb)
		if _, err := parseBytes(t, b, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestV3ReplaceMustFollowCursor(t *testing.T) {
	v := v3Basic()
	b := v.build(t)
	h := v.h
	h.OpCount = 5
	// Rewrite op 2 (Replace) with a source one byte off.
	op := Op{Type: OpReplace, NewBlock: 7, DataLength: 4096, Source: uint64(h.DataOffset() + 4096 + 1)}
	copy(b[h.OpOffset(2):], AppendOpV3(nil, op))
	_, err := parseBytes(t, b, nil)
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Op != 2 || fe.Off != h.OpOffset(2) {
		t.Fatalf("got %v", err)
	}
	// Metadata types are not allowed in the v3 op region.
	b = v.build(t)
	copy(b[h.OpOffset(3):], AppendOpV3(nil, Op{Type: OpLabel}))
	if _, err := parseBytes(t, b, nil); !errors.As(err, &fe) || fe.Op != 3 {
		t.Fatalf("label op in v3: %v", err)
	}
}

func TestV3OpCountTrusted(t *testing.T) {
	// Ops flushed after the last header rewrite are invisible (§3.5).
	v := v3Basic()
	v.h.OpCount = 3
	r := mustParse(t, v.build(t), nil)
	if len(r.Ops()) != 3 {
		t.Fatalf("%d ops", len(r.Ops()))
	}
}

func TestV3ResumePoints(t *testing.T) {
	v := v3Basic()
	v.resume = []ResumePoint{{Label: 10, OpIndex: 1}, {Label: 11, OpIndex: 3}, {Label: 12, OpIndex: 5}}
	v.h.ResumePointCount = 3
	b := v.build(t)
	for _, c := range []struct{ label, ops uint64 }{{10, 1}, {11, 3}, {12, 5}} {
		r := mustParse(t, b, labelOpt(c.label))
		if uint64(len(r.Ops())) != c.ops {
			t.Fatalf("label %d: %d ops", c.label, len(r.Ops()))
		}
		if l, ok := r.LastLabel(); ok {
			t.Fatalf("label %d: v3 LastLabel reported %d (AOSP never reports one for v3)", c.label, l)
		}
		if r.MergeOrder() != nil && len(r.MergeOrder()) > 0 {
			t.Fatal("merge order at label")
		}
	}
	if _, err := parseBytes(t, b, labelOpt(13)); !errors.Is(err, ErrLabelNotFound) {
		t.Fatalf("missing label: %v", err)
	}
	r := mustParse(t, b, nil)
	if l, ok := r.LastLabel(); ok {
		t.Fatalf("v3 LastLabel reported %d (AOSP never reports one for v3)", l)
	}

	t.Run("unbounded_count_quirk", func(t *testing.T) {
		// resume_point_count keeps growing past resume_point_max; the
		// search must stay inside the 4 real entries.
		v := v3Basic()
		v.resume = []ResumePoint{{Label: 20, OpIndex: 2}, {Label: 21, OpIndex: 4}, {Label: 22, OpIndex: 4}, {Label: 23, OpIndex: 5}}
		v.h.ResumePointCount = 5000
		b := v.build(t)
		r := mustParse(t, b, labelOpt(21))
		if len(r.Ops()) != 4 {
			t.Fatalf("%d ops", len(r.Ops()))
		}
		if l, ok := mustParse(t, b, nil).LastLabel(); ok {
			t.Fatalf("v3 LastLabel reported %d", l)
		}
	})
	t.Run("no_search_beyond_max", func(t *testing.T) {
		// With resume_point_max 2 and count 10, the bytes of op 0 right
		// after the region look like a resume point {label: new_block<<32 |
		// data_length, op_index: source_info}. AOSP would find it; a
		// bounded search must not.
		v := v3Basic()
		v.h.ResumePointMax = 2
		v.h.ResumePointCount = 10
		v.resume = []ResumePoint{{Label: 1, OpIndex: 1}}
		b := v.build(t)
		fake := uint64(5) << 32 // op 0 is Copy new_block 5, data_length 0
		if _, err := parseBytes(t, b, labelOpt(fake)); !errors.Is(err, ErrLabelNotFound) {
			t.Fatalf("label read from op region: %v", err)
		}
	})
	t.Run("op_index_beyond_max", func(t *testing.T) {
		v := v3Basic()
		v.resume = []ResumePoint{{Label: 1, OpIndex: 11}}
		v.h.ResumePointCount = 1
		if _, err := parseBytes(t, v.build(t), labelOpt(1)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("got %v", err)
		}
	})
}

// zlibExactly finds data of 4096 bytes whose zlib (level 9) encoding is
// exactly 4096 bytes long, like AOSP's incompressible_block fixture.
func zlibExactly(t *testing.T) (raw, comp []byte) {
	rng := rand.New(rand.NewPCG(1, 2))
	noise := make([]byte, 4096)
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	for z := 0; z < 400; z++ {
		raw = bytes.Clone(noise)
		clear(raw[:z])
		var out bytes.Buffer
		w, _ := zlib.NewWriterLevel(&out, 9)
		w.Write(raw)
		w.Close()
		if out.Len() == 4096 {
			return raw, out.Bytes()
		}
	}
	t.Fatal("no 4096-byte zlib stream found")
	return nil, nil
}

// TestReadDataDecisionTable covers §4.2: raw vs decompress per version,
// algorithm and data_length.
func TestReadDataDecisionTable(t *testing.T) {
	raw4k, gz4k := zlibExactly(t)
	rng := rand.New(rand.NewPCG(3, 4))
	text := make([]byte, 65536)
	for i := range text {
		text[i] = "abcdefgh"[rng.IntN(8)]
	}
	comp := func(alg Compression, unit int, src []byte) []byte {
		level := DefaultLevel(alg)
		if alg == CompressionBrotli || alg == CompressionGz {
			level = 5 // the level does not matter here; keep the test fast
		}
		c, err := NewCompressor(alg, level, unit)
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.Compress(nil, src)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	t.Run("v2_gz_4096_still_decompressed", func(t *testing.T) {
		bl := newV2Builder(t, hdrV2(16, 0))
		bl.add(Op{Type: OpReplace, NewBlock: 1, Compression: CompressionGz}, gz4k)
		r := mustParse(t, bl.finalize(), nil)
		if r.Ops()[0].DataLength != 4096 {
			t.Fatal("setup")
		}
		buf := make([]byte, 4096)
		if n, err := r.ReadOpData(0, buf, 0); err != nil || n != 4096 || !bytes.Equal(buf, raw4k) {
			t.Fatalf("n=%d err=%v equal=%v", n, err, bytes.Equal(buf, raw4k))
		}
	})
	for _, alg := range []Compression{CompressionGz, CompressionBrotli, CompressionLz4, CompressionZstd} {
		t.Run("v2_"+alg.String(), func(t *testing.T) {
			bl := newV2Builder(t, hdrV2(16, 0))
			bl.add(Op{Type: OpReplace, NewBlock: 1, Compression: alg}, comp(alg, 4096, text[:4096]))
			rawIdx := -1
			if alg == CompressionLz4 || alg == CompressionZstd {
				// raw fallback: data_length == 4096 means stored raw.
				rawIdx = bl.add(Op{Type: OpReplace, NewBlock: 2, Compression: alg}, text[4096:8192])
			}
			r := mustParse(t, bl.finalize(), nil)
			buf := make([]byte, 4096)
			if n, err := r.ReadOpData(0, buf, 0); err != nil || n != 4096 || !bytes.Equal(buf, text[:4096]) {
				t.Fatalf("n=%d err=%v", n, err)
			}
			// Partial read with skip.
			small := make([]byte, 1000)
			if n, err := r.ReadOpData(0, small, 3500); err != nil || n != 596 || !bytes.Equal(small[:n], text[3500:4096]) {
				t.Fatalf("partial n=%d err=%v", n, err)
			}
			if rawIdx >= 0 {
				if n, err := r.ReadOpData(rawIdx, buf, 0); err != nil || n != 4096 || !bytes.Equal(buf, text[4096:8192]) {
					t.Fatalf("raw n=%d err=%v", n, err)
				}
			}
		})
	}
	for _, alg := range []Compression{CompressionNone, CompressionGz, CompressionBrotli, CompressionLz4, CompressionZstd} {
		for _, k := range []uint8{0, 1, 4, 6} {
			unit := 4096 << k
			t.Run("v3_"+alg.String(), func(t *testing.T) {
				src := make([]byte, unit)
				for i := range src {
					src[i] = text[i%len(text)] ^ byte(i>>16)
				}
				v := &v3Image{h: newV3Header(4, alg, 0)}
				v.h.MaxCompressionSize = 256 << 10
				payload := src
				if alg != CompressionNone {
					payload = comp(alg, unit, src)
				}
				// Op 1 stores the unit raw (data_length == unit) even for
				// gz/brotli.
				v.ops = []Op{{Type: OpReplace, NewBlock: 0, FactorShift: k}, {Type: OpReplace, NewBlock: 1000, FactorShift: k}}
				v.data = [][]byte{payload, src}
				r := mustParse(t, v.build(t), nil)
				buf := make([]byte, unit)
				for i := range 2 {
					if n, err := r.ReadOpData(i, buf, 0); err != nil || n != unit || !bytes.Equal(buf, src) {
						t.Fatalf("k=%d op %d n=%d err=%v", k, i, n, err)
					}
				}
				// Partial read across the middle of the unit.
				part := make([]byte, 5000)
				skip := unit / 2
				want := min(5000, unit-skip)
				if n, err := r.ReadOpData(0, part, skip); err != nil || n != want || !bytes.Equal(part[:n], src[skip:skip+want]) {
					t.Fatalf("partial n=%d err=%v", n, err)
				}
			})
		}
	}
	t.Run("corrupt_payload", func(t *testing.T) {
		bl := newV2Builder(t, hdrV2(16, 0))
		p := comp(CompressionZstd, 4096, text[:4096])
		p[len(p)/2] ^= 0xff
		p[len(p)-1] ^= 0xff
		bl.add(Op{Type: OpReplace, NewBlock: 1, Compression: CompressionZstd}, p)
		r := mustParse(t, bl.finalize(), nil)
		_, err := r.ReadOpData(0, make([]byte, 4096), 0)
		var fe *FormatError
		if !errors.As(err, &fe) || fe.Op != 0 || fe.Off != bl.dataAt[0] {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("short_gz", func(t *testing.T) {
		// A gz stream that ends after 100 bytes is corrupt for a 4 KiB unit.
		var out bytes.Buffer
		w := zlib.NewWriter(&out)
		w.Write(text[:100])
		w.Close()
		bl := newV2Builder(t, hdrV2(16, 0))
		bl.add(Op{Type: OpReplace, NewBlock: 1, Compression: CompressionGz}, out.Bytes())
		r := mustParse(t, bl.finalize(), nil)
		if _, err := r.ReadOpData(0, make([]byte, 4096), 0); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("got %v", err)
		}
	})
}

// TestV3Torn truncates a v3 image at every 16-byte step: the parse fails
// cleanly while the op region is incomplete; once it succeeds, payload reads
// beyond the cut fail cleanly and the others return the right bytes.
func TestV3Torn(t *testing.T) {
	v := v3Basic()
	v.h.BufferSize = 0
	full := v.build(t)
	h := v.h
	h.OpCount = 5
	opsEnd := h.OpOffset(5)
	buf := make([]byte, 16384)
	for cut := int64(0); cut <= int64(len(full)); cut += 16 {
		b := full[:cut]
		r, err := parseBytes(t, b, nil)
		if cut < opsEnd {
			if err == nil {
				t.Fatalf("cut %#x inside the op region parsed", cut)
			}
			continue
		}
		if err != nil {
			t.Fatalf("cut %#x: %v", cut, err)
		}
		for i, op := range r.Ops() {
			if op.Type != OpReplace && op.Type != OpXor {
				continue
			}
			off, _ := r.DataOffset(&op)
			n, err := r.ReadOpData(i, buf, 0)
			if off+int64(op.DataLength) > cut {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("cut %#x op %d: read past end: n=%d err=%v", cut, i, n, err)
				}
			} else if err != nil || !bytes.Equal(buf[:n], full[off:off+int64(n)]) {
				t.Fatalf("cut %#x op %d: %v", cut, i, err)
			}
		}
	}
}
