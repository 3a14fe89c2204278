package cow

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// workedExample builds, byte by byte from the table of §2.10, the AOSP
// cow_v2 fixture written by `write_cow -write_legacy` (payload bytes are
// arbitrary here: 'R' for the Replace block, 'X' for the Xor block).
func workedExample(t testing.TB) []byte {
	m := make(img, 0, 0x2021e2)
	hdr := Header{Magic: Magic, MajorVersion: 2, HeaderSize: 38, FooterSize: 84, OpSize: 20,
		BlockSize: 4096, ClusterOps: 5, NumMergeOps: 1, BufferSize: 2097152}
	hb, err := hdr.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	m.at(0x0, hb)
	m.at(0x200025, []byte{0}) // scratch: 2 MiB of zeros
	put := func(off int64, o Op) { m.at(off, AppendOpV2(nil, o)) }
	put(0x200026, Op{Type: OpCopy, NewBlock: 0, Source: 5})
	put(0x20003a, Op{Type: OpReplace, DataLength: 4096, NewBlock: 2, Source: 0x20008a})
	put(0x20004e, Op{Type: OpLabel, Source: 1})
	put(0x200062, Op{Type: OpXor, DataLength: 4096, NewBlock: 50, Source: 24*4096 + 10})
	put(0x200076, Op{Type: OpCluster, Source: 8192})
	m.at(0x20008a, block('R'))
	m.at(0x20108a, block('X'))
	for i := range 4 {
		put(0x20208a+int64(i)*20, Op{Type: OpZero, NewBlock: uint64(5 + i)})
	}
	put(0x20208a+80, Op{Type: OpCluster, Source: 0})
	for i := range 4 {
		put(0x2020ee+int64(i)*20, Op{Type: OpZero, NewBlock: uint64(9 + i)})
	}
	put(0x2020ee+80, Op{Type: OpCluster, Source: 0})
	put(0x202152, Op{Type: OpZero, NewBlock: 13})
	put(0x202166, Op{Type: OpZero, NewBlock: 14})
	put(0x20217a, Op{Type: OpLabel, Source: 2})
	m.at(0x20218e, AppendFooter(nil, Footer{NumOps: 18, OpsSize: 360}))
	if len(m) != 0x2021e2 {
		t.Fatalf("worked example is %#x bytes, want 0x2021e2", len(m))
	}
	return m
}

func TestWorkedExampleCowV2(t *testing.T) {
	b := workedExample(t)
	if len(b) != 2105826 {
		t.Fatalf("size %d, want 2105826", len(b))
	}
	r := mustParse(t, b, nil)
	h := r.Header()
	if h.MajorVersion != 2 || h.HeaderSize != 38 || h.ClusterOps != 5 || h.NumMergeOps != 1 || h.BufferSize != 2097152 {
		t.Fatalf("header %+v", h)
	}
	want := []struct {
		off int64
		typ OpType
		nb  uint64
		src uint64
		dl  uint32
	}{
		{0x200026, OpCopy, 0, 5, 0},
		{0x20003a, OpReplace, 2, 0x20008a, 4096},
		{0x20004e, OpLabel, 0, 1, 0},
		{0x200062, OpXor, 50, 98314, 4096},
		{0x200076, OpCluster, 0, 8192, 0},
		{0x20208a, OpZero, 5, 0, 0},
		{0x20209e, OpZero, 6, 0, 0},
		{0x2020b2, OpZero, 7, 0, 0},
		{0x2020c6, OpZero, 8, 0, 0},
		{0x2020da, OpCluster, 0, 0, 0},
		{0x2020ee, OpZero, 9, 0, 0},
		{0x202102, OpZero, 10, 0, 0},
		{0x202116, OpZero, 11, 0, 0},
		{0x20212a, OpZero, 12, 0, 0},
		{0x20213e, OpCluster, 0, 0, 0},
		{0x202152, OpZero, 13, 0, 0},
		{0x202166, OpZero, 14, 0, 0},
		{0x20217a, OpLabel, 0, 2, 0},
	}
	ops := r.Ops()
	if len(ops) != len(want) {
		t.Fatalf("%d ops, want %d", len(ops), len(want))
	}
	for i, w := range want {
		o := ops[i]
		if r.OpOffset(i) != w.off || o.Type != w.typ || o.NewBlock != w.nb || o.Source != w.src || o.DataLength != w.dl {
			t.Errorf("op %d at %#x: %v; want %#x %s nb=%d src=%d dl=%d", i, r.OpOffset(i), o, w.off, w.typ, w.nb, w.src, w.dl)
		}
	}
	f, ok := r.Footer()
	if !ok || f.NumOps != 18 || f.OpsSize != 360 || f.Unused != [64]byte{} {
		t.Fatalf("footer %+v %v", f, ok)
	}
	if r.EndOffset() != 0x20218e {
		t.Errorf("EndOffset %#x, want footer position 0x20218e", r.EndOffset())
	}
	if l, ok := r.LastLabel(); !ok || l != 2 {
		t.Errorf("last label %d %v", l, ok)
	}
	xop := ops[3]
	if off, err := r.DataOffset(&xop); err != nil || off != 0x20108a {
		t.Errorf("xor payload at %#x (%v), want 0x20108a", off, err)
	}
	buf := make([]byte, 4096)
	if n, err := r.ReadData(&xop, buf, 0); err != nil || n != 4096 || !bytes.Equal(buf, block('X')) {
		t.Errorf("xor ReadData n=%d err=%v", n, err)
	}
	if n, err := r.ReadOpData(1, buf, 0); err != nil || n != 4096 || !bytes.Equal(buf, block('R')) {
		t.Errorf("replace ReadData n=%d err=%v", n, err)
	}
	// Merge order: ordered ops in file order, then the rest ascending.
	if got, wantMO := newBlocks(r.MergeOrder()), []uint64{0, 50, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}; !slices.Equal(got, wantMO) {
		t.Errorf("merge order %v, want %v", got, wantMO)
	}
	if r.MergeOpStart() != 1 || r.NumOrderedOpsToMerge() != 1 {
		t.Errorf("merge start %d ordered-to-merge %d, want 1 1", r.MergeOpStart(), r.NumOrderedOpsToMerge())
	}
	if err := r.VerifyMergeOps(); err != nil {
		t.Errorf("VerifyMergeOps: %v", err)
	}
	if r.Compression() != CompressionNone {
		t.Errorf("compression %s", r.Compression())
	}

	// The builder reproduces the fixture byte for byte.
	bl := newV2Builder(t, Header{Magic: Magic, MajorVersion: 2, HeaderSize: 38, FooterSize: 84, OpSize: 20,
		BlockSize: 4096, ClusterOps: 5, NumMergeOps: 1, BufferSize: 2097152})
	bl.add(Op{Type: OpCopy, NewBlock: 0, Source: 5}, nil)
	bl.add(Op{Type: OpReplace, NewBlock: 2}, block('R'))
	bl.add(Op{Type: OpLabel, Source: 1}, nil)
	bl.add(Op{Type: OpXor, NewBlock: 50, Source: 98314}, block('X'))
	for nb := uint64(5); nb <= 14; nb++ {
		bl.add(Op{Type: OpZero, NewBlock: nb}, nil)
	}
	bl.add(Op{Type: OpLabel, Source: 2}, nil)
	if got := bl.finalize(); !bytes.Equal(got, b) {
		t.Fatalf("builder output differs from the hand-made fixture (len %d vs %d)", len(got), len(b))
	}
}

func TestWorkedExampleLabelResume(t *testing.T) {
	b := workedExample(t)
	r := mustParse(t, b, labelOpt(1))
	if len(r.Ops()) != 3 || r.Ops()[2].Type != OpLabel {
		t.Fatalf("ops up to label 1: %v", r.Ops())
	}
	if _, ok := r.Footer(); ok {
		t.Error("footer reported when stopping at a label")
	}
	if r.EndOffset() != 0x200062 || r.DataCursor() != 0x20108a {
		t.Errorf("end %#x cursor %#x, want 0x200062 0x20108a", r.EndOffset(), r.DataCursor())
	}
	if r.MergeOrder() != nil && len(r.MergeOrder()) != 0 {
		t.Error("merge order prepared at a label")
	}
	if _, err := parseBytes(t, b, labelOpt(7)); !errors.Is(err, ErrLabelNotFound) {
		t.Errorf("missing label: %v", err)
	}
}

func TestV2HeaderChecks(t *testing.T) {
	good := func() Header { return hdrV2(4, 0) }
	cases := []struct {
		name string
		mod  func(*Header)
	}{
		{"footer_size", func(h *Header) { h.FooterSize = 80 }},
		{"op_size", func(h *Header) { h.OpSize = 16 }},
		{"cluster_ops_1", func(h *Header) { h.ClusterOps = 1 }},
		{"minor", func(h *Header) { h.MinorVersion = 1 }},
		{"major4", func(h *Header) { h.MajorVersion = 4 }},
		{"major0", func(h *Header) { h.MajorVersion = 0 }},
		{"magic", func(h *Header) { h.Magic++ }},
		{"scratch_past_eof", func(h *Header) { h.BufferSize = 1 << 30 }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := good()
			c.mod(&h)
			hb, _ := h.MarshalBinary()
			bl := newV2Builder(t, good())
			bl.add(Op{Type: OpZero, NewBlock: 1}, nil)
			b := bl.finalize()
			copy(b, hb)
			_, err := parseBytes(t, b, nil)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("want ErrCorrupt, got %v", err)
			}
		})
	}
	t.Run("header_size_79", func(t *testing.T) {
		bl := newV2Builder(t, good())
		b := bl.finalize()
		b[12] = 79
		if _, err := parseBytes(t, b, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("tiny", func(t *testing.T) {
		for n := 0; n < 14; n++ {
			if _, err := parseBytes(t, make([]byte, n), nil); err == nil {
				t.Fatalf("size %d parsed", n)
			}
		}
	})
}

func TestV1Header(t *testing.T) {
	h := hdrV1(0)
	hb, _ := h.MarshalBinary()
	if len(hb) != 34 {
		t.Fatalf("v1 header %d bytes", len(hb))
	}
	bl := newV2Builder(t, h)
	bl.add(Op{Type: OpReplace, NewBlock: 3}, block(7))
	bl.add(Op{Type: OpCopy, NewBlock: 4, Source: 1}, nil)
	b := bl.finalize()
	if bl.offsets[0] != 34 {
		t.Fatalf("first op at %d", bl.offsets[0])
	}
	r := mustParse(t, b, nil)
	if r.Header().BufferSize != 0 || r.Header().HeaderSize != 34 || len(r.Ops()) != 2 || r.OpOffset(0) != 34 {
		t.Fatalf("v1: %+v ops %v", r.Header(), r.Ops())
	}
	buf := make([]byte, 4096)
	if n, err := r.ReadOpData(0, buf, 0); err != nil || n != 4096 || !bytes.Equal(buf, block(7)) {
		t.Fatalf("read %d %v", n, err)
	}

	// A v1 header with header_size 38 whose bytes 34..37 are non-zero: the
	// buffer_size is forced to 0 and ops start at header_size.
	h.HeaderSize = 38
	h.BufferSize = 1 << 21
	bl = newV2Builder(t, Header{Magic: Magic, MajorVersion: 1, HeaderSize: 38, FooterSize: 84, OpSize: 20, BlockSize: 4096})
	bl.add(Op{Type: OpZero, NewBlock: 9}, nil)
	b = bl.finalize()
	hb, _ = h.MarshalBinary()
	copy(b, hb)
	r = mustParse(t, b, nil)
	if r.Header().BufferSize != 0 || r.OpOffset(0) != 38 {
		t.Fatalf("v1 with 38-byte header: %+v first op at %d", r.Header(), r.OpOffset(0))
	}
}

// TestV2Layouts checks clustered and unclustered files of several cluster
// sizes: every op, offset and payload comes back.
func TestV2Layouts(t *testing.T) {
	for _, n := range []uint32{0, 2, 3, 5, 16, 1024} {
		for _, buffer := range []uint32{0, 1 << 21} {
			t.Run("", func(t *testing.T) {
				bl := newV2Builder(t, hdrV2(n, buffer))
				if n != 0 {
					bl.add(Op{Type: OpSequence}, seqPayload(10, 11))
				}
				bl.add(Op{Type: OpCopy, NewBlock: 10, Source: 20}, nil)
				bl.add(Op{Type: OpXor, NewBlock: 11, Source: 4096*21 + 5}, block('x'))
				bl.add(Op{Type: OpLabel, Source: 0}, nil)
				for i := range 7 {
					bl.add(Op{Type: OpReplace, NewBlock: uint64(100 - i)}, block(byte(i)))
					bl.add(Op{Type: OpZero, NewBlock: uint64(200 + i)}, nil)
					bl.add(Op{Type: OpLabel, Source: uint64(i + 1)}, nil)
				}
				b := bl.finalize()
				r := mustParse(t, b, nil)
				ops := r.Ops()
				if len(ops) != bl.numOps {
					t.Fatalf("n=%d: %d ops, want %d", n, len(ops), bl.numOps)
				}
				buf := make([]byte, 4096)
				for i := range ops {
					if r.OpOffset(i) != bl.offsets[i] {
						t.Fatalf("op %d at %#x, want %#x", i, r.OpOffset(i), bl.offsets[i])
					}
					if ops[i].Type == OpReplace || ops[i].Type == OpXor {
						off, err := r.DataOffset(&ops[i])
						if err != nil || off != bl.dataAt[i] {
							t.Fatalf("op %d data at %#x (%v), want %#x", i, off, err, bl.dataAt[i])
						}
						if _, err := r.ReadOpData(i, buf, 0); err != nil || !bytes.Equal(buf, b[off:off+4096]) {
							t.Fatalf("op %d read: %v", i, err)
						}
					}
				}
				if n == 0 {
					// Unclustered files cannot carry sequence ops correctly
					// (§2.6 quirk); only check the rest.
					return
				}
				if !slices.Equal(r.SequenceData(), []uint32{10, 11}) {
					t.Errorf("sequence %v", r.SequenceData())
				}
				wantMO := []uint64{10, 11, 94, 95, 96, 97, 98, 99, 100, 200, 201, 202, 203, 204, 205, 206}
				if got := newBlocks(r.MergeOrder()); !slices.Equal(got, wantMO) {
					t.Errorf("merge order %v", got)
				}
				if err := r.VerifyMergeOps(); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

func TestV2FooterMismatch(t *testing.T) {
	bl := newV2Builder(t, hdrV2(4, 0))
	bl.add(Op{Type: OpZero, NewBlock: 1}, nil)
	bl.add(Op{Type: OpZero, NewBlock: 2}, nil)
	b := bl.finalize()
	foot := len(b) - FooterSize
	t.Run("num_ops", func(t *testing.T) {
		c := bytes.Clone(b)
		c[foot+12]++
		if _, err := parseBytes(t, c, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("ops_size", func(t *testing.T) {
		c := bytes.Clone(b)
		c[foot+4]++
		if _, err := parseBytes(t, c, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("truncated_footer", func(t *testing.T) {
		if _, err := parseBytes(t, b[:len(b)-1], nil); err == nil {
			t.Fatal("parsed")
		}
	})
	t.Run("unused_nonzero_ignored", func(t *testing.T) {
		c := bytes.Clone(b)
		c[len(c)-1] = 1
		r := mustParse(t, c, nil)
		if f, _ := r.Footer(); f.Unused[63] != 1 {
			t.Fatal("unused bytes not reported")
		}
	})
}

// TestTornFiles truncates a labelled file at every op boundary (and a few
// bytes past each): without a label the parse must fail cleanly; with the
// last label before the cut it yields exactly the ops up to that label.
func TestTornFiles(t *testing.T) {
	for _, n := range []uint32{0, 4} {
		bl := newV2Builder(t, hdrV2(n, 0))
		type lab struct {
			label uint64
			idx   int
		}
		var labels []lab
		for i := range 6 {
			bl.add(Op{Type: OpReplace, NewBlock: uint64(i)}, block(byte(i)))
			bl.add(Op{Type: OpCopy, NewBlock: uint64(50 + i), Source: uint64(i)}, nil)
			idx := bl.add(Op{Type: OpLabel, Source: uint64(i)}, nil)
			labels = append(labels, lab{uint64(i), idx})
		}
		full := bl.finalize()
		cuts := map[int64]bool{}
		for _, o := range bl.offsets {
			for _, d := range []int64{0, 1, OpV2Size - 1, OpV2Size, OpV2Size + 1} {
				if o+d <= int64(len(full)) {
					cuts[o+d] = true
				}
			}
		}
		for cut := range cuts {
			b := full[:cut]
			complete := cut == int64(len(full))
			if _, err := parseBytes(t, b, nil); (err == nil) != complete {
				t.Fatalf("n=%d cut %#x/%#x: err=%v", n, cut, len(full), err)
			}
			for _, l := range labels {
				// The label survives if its op and everything before it
				// (op slots and the payloads it depends on) were written.
				end := bl.offsets[l.idx] + OpV2Size
				r, err := parseBytes(t, b, labelOpt(l.label))
				if end > cut {
					if err == nil {
						t.Fatalf("n=%d cut %#x: label %d (ends %#x) found", n, cut, l.label, end)
					}
					continue
				}
				if err != nil {
					t.Fatalf("n=%d cut %#x: label %d: %v", n, cut, l.label, err)
				}
				if len(r.Ops()) != l.idx+1 {
					t.Fatalf("n=%d cut %#x label %d: %d ops, want %d", n, cut, l.label, len(r.Ops()), l.idx+1)
				}
				for i := range r.Ops() {
					if r.OpOffset(i) != bl.offsets[i] {
						t.Fatalf("op %d offset", i)
					}
				}
			}
		}
	}
}

func TestV2MixedCompression(t *testing.T) {
	bl := newV2Builder(t, hdrV2(4, 0))
	bl.add(Op{Type: OpReplace, NewBlock: 1, Compression: CompressionGz}, []byte{1, 2, 3})
	bl.add(Op{Type: OpReplace, NewBlock: 2, Compression: CompressionLz4}, []byte{1, 2, 3})
	_, err := parseBytes(t, bl.finalize(), nil)
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Op != 1 {
		t.Fatalf("want FormatError at op 1, got %v", err)
	}
	// Same algorithm everywhere, plus uncompressed metadata: fine, and the
	// inferred algorithm is stamped on data ops.
	bl = newV2Builder(t, hdrV2(4, 0))
	bl.add(Op{Type: OpReplace, NewBlock: 1, Compression: CompressionLz4}, block(1))
	bl.add(Op{Type: OpReplace, NewBlock: 2}, block(2))
	bl.add(Op{Type: OpCopy, NewBlock: 3, Source: 9}, nil)
	r := mustParse(t, bl.finalize(), nil)
	if r.Compression() != CompressionLz4 || r.Ops()[1].Compression != CompressionLz4 || r.Ops()[2].Compression != CompressionNone {
		t.Fatalf("compression %s ops %v", r.Compression(), r.Ops())
	}
	// Unknown algorithm.
	bl = newV2Builder(t, hdrV2(4, 0))
	bl.add(Op{Type: OpReplace, NewBlock: 1, Compression: 9}, []byte{1})
	if _, err := parseBytes(t, bl.finalize(), nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("unknown compression: %v", err)
	}
}

func TestV2Translation(t *testing.T) {
	cases := []struct {
		name string
		op   Op
		ok   bool
	}{
		{"new_block_u32", Op{Type: OpZero, NewBlock: 1<<32 - 1}, true},
		{"new_block_too_big", Op{Type: OpZero, NewBlock: 1 << 32}, false},
		{"source_48", Op{Type: OpCopy, Source: 1<<48 - 1}, true},
		{"source_too_big", Op{Type: OpCopy, Source: 1 << 48}, false},
		{"label_any", Op{Type: OpLabel, Source: 1<<64 - 1}, true},
		{"end_of_install_label", Op{Type: OpLabel, Source: EndOfInstallLabel}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bl := newV2Builder(t, hdrV2(4, 0))
			bl.add(Op{Type: OpZero, NewBlock: 7}, nil)
			bl.add(c.op, nil)
			_, err := parseBytes(t, bl.finalize(), nil)
			if c.ok != (err == nil) {
				t.Fatalf("err=%v", err)
			}
			var fe *FormatError
			if err != nil && (!errors.As(err, &fe) || fe.Op != 1 || fe.Off != bl.offsets[1]) {
				t.Fatalf("error does not name op 1 at %#x: %v", bl.offsets[1], err)
			}
		})
	}
}

func TestV2ClusterSkipPastEOF(t *testing.T) {
	bl := newV2Builder(t, hdrV2(4, 0))
	bl.add(Op{Type: OpZero, NewBlock: 1}, nil)
	bl.add(Op{Type: OpLabel, Source: 5}, nil)
	b := bl.finalize()
	// Turn the footer into a cluster op that jumps far beyond the end.
	foot := len(b) - FooterSize
	copy(b[foot:], AppendOpV2(nil, Op{Type: OpCluster, Source: 1 << 40}))
	if _, err := parseBytes(t, b, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v", err)
	}
	// With the label before it, resume still works.
	if r, err := parseBytes(t, b, labelOpt(5)); err != nil || len(r.Ops()) != 2 {
		t.Fatalf("label: %v", err)
	}
}

func TestV2LabelStopsAtFirstMatch(t *testing.T) {
	bl := newV2Builder(t, hdrV2(0, 0))
	bl.add(Op{Type: OpLabel, Source: 1}, nil)
	bl.add(Op{Type: OpZero, NewBlock: 1}, nil)
	bl.add(Op{Type: OpLabel, Source: 2}, nil)
	bl.add(Op{Type: OpZero, NewBlock: 2}, nil)
	bl.add(Op{Type: OpLabel, Source: 1}, nil)
	b := bl.bytes() // unfinished: no footer
	if _, err := parseBytes(t, b, nil); !errors.Is(err, ErrNoFooter) {
		t.Fatalf("no footer: %v", err)
	}
	r := mustParse(t, b, labelOpt(2))
	if len(r.Ops()) != 3 {
		t.Fatalf("%d ops", len(r.Ops()))
	}
	r = mustParse(t, b, labelOpt(1))
	if len(r.Ops()) != 1 {
		t.Fatalf("%d ops", len(r.Ops()))
	}
}

func TestReadDataBounds(t *testing.T) {
	bl := newV2Builder(t, hdrV2(0, 0))
	bl.add(Op{Type: OpReplace, NewBlock: 1}, block(3))
	b := bl.finalize()
	r := mustParse(t, b, nil)
	cases := []struct {
		name string
		op   Op
	}{
		{"in_header", Op{Type: OpReplace, Source: 10, DataLength: 4}},
		{"past_eof", Op{Type: OpReplace, Source: uint64(len(b)), DataLength: 1}},
		{"runs_past_eof", Op{Type: OpReplace, Source: uint64(len(b) - 10), DataLength: 11}},
		{"len_ge_size", Op{Type: OpReplace, Source: 38, DataLength: uint32(len(b))}},
		{"no_payload", Op{Type: OpZero}},
		{"xor_unknown_block", Op{Type: OpXor, NewBlock: 77, DataLength: 4}},
	}
	buf := make([]byte, 4096)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := r.ReadData(&c.op, buf, 0); err == nil {
				t.Fatal("no error")
			}
		})
	}
	// Partial reads: ignoreBytes skips a prefix of the unit.
	op := r.Ops()[0]
	small := make([]byte, 100)
	n, err := r.ReadData(&op, small, 4000)
	if err != nil || n != 96 || !bytes.Equal(small[:n], bytes.Repeat([]byte{3}, 96)) {
		t.Fatalf("partial: n=%d err=%v", n, err)
	}
	if _, err := r.ReadData(&op, small, 5000); err == nil {
		t.Fatal("ignoreBytes past payload accepted")
	}
}

func TestReaderConcurrent(t *testing.T) {
	b := workedExample(t)
	r := mustParse(t, b, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			buf := make([]byte, 4096)
			for range 50 {
				i := 1 + 2*(g%2) // op 1 (Replace) or op 3 (Xor)
				if _, err := r.ReadOpData(i, buf, 0); err != nil {
					t.Error(err)
					return
				}
				want := byte('R')
				if i == 3 {
					want = 'X'
				}
				if buf[0] != want || buf[4095] != want {
					t.Error("wrong data")
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestOpen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.cow")
	if err := os.WriteFile(p, workedExample(t), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := Open(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Size() != 0x2021e2 || len(r.Ops()) != 18 {
		t.Fatalf("size %d ops %d", r.Size(), len(r.Ops()))
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// Errors name the path.
	b := workedExample(t)
	b[0x20218e+12] = 99 // footer num_ops
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Open(p, nil)
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Path != p || fe.Off != 0x20218e {
		t.Fatalf("error %v does not name path and footer offset", err)
	}
}
