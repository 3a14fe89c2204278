package cow

import (
	"errors"
	"slices"
	"testing"
)

func TestMergeOrderV2(t *testing.T) {
	type add struct {
		op   Op
		data []byte
	}
	cases := []struct {
		name     string
		adds     []add
		merged   uint64
		legacy   bool
		want     []uint64 // new_block per merge step
		wantIdx  []int    // optional: op index per step
		ordered  uint64   // NumOrderedOpsToMerge
		wantErr  bool
		sequence []uint32
	}{
		{
			name: "no_sequence_ordered_first_in_file_order",
			adds: []add{
				{Op{Type: OpReplace, NewBlock: 9}, block(1)},
				{Op{Type: OpCopy, NewBlock: 3, Source: 30}, nil},
				{Op{Type: OpZero, NewBlock: 1}, nil},
				{Op{Type: OpXor, NewBlock: 2, Source: 4096 * 40}, block(2)},
				{Op{Type: OpLabel, Source: 1}, nil},
				{Op{Type: OpCopy, NewBlock: 1000, Source: 31}, nil},
				{Op{Type: OpReplace, NewBlock: 4}, block(3)},
			},
			want:    []uint64{3, 2, 1000, 1, 4, 9},
			ordered: 3,
		},
		{
			name: "num_merge_ops_is_an_index",
			adds: []add{
				{Op{Type: OpCopy, NewBlock: 3, Source: 30}, nil},
				{Op{Type: OpCopy, NewBlock: 2, Source: 31}, nil},
				{Op{Type: OpZero, NewBlock: 1}, nil},
			},
			merged:  5, // beyond the ordered ops: clamps to 0
			want:    []uint64{3, 2, 1},
			ordered: 0,
		},
		{
			name: "legacy_descending",
			adds: []add{
				{Op{Type: OpCopy, NewBlock: 3, Source: 30}, nil},
				{Op{Type: OpZero, NewBlock: 1}, nil},
				{Op{Type: OpZero, NewBlock: 7}, nil},
				{Op{Type: OpReplace, NewBlock: 4}, block(3)},
			},
			legacy:  true,
			merged:  1,
			want:    []uint64{3, 7, 4, 1},
			ordered: 0,
		},
		{
			name: "sequence_ops",
			adds: []add{
				{Op{Type: OpSequence}, seqPayload(20, 10)},
				{Op{Type: OpSequence}, seqPayload(30)},
				{Op{Type: OpCopy, NewBlock: 10, Source: 1}, nil},
				{Op{Type: OpXor, NewBlock: 20, Source: 4096*2 + 1}, block(1)},
				{Op{Type: OpCopy, NewBlock: 30, Source: 3}, nil},
				{Op{Type: OpReplace, NewBlock: 5}, block(2)},
				// Ordered op not listed in the sequence: goes with the rest.
				{Op{Type: OpCopy, NewBlock: 6, Source: 4}, nil},
				{Op{Type: OpZero, NewBlock: 0}, nil},
			},
			merged:   2,
			want:     []uint64{20, 10, 30, 0, 5, 6},
			ordered:  1,
			sequence: []uint32{20, 10, 30},
		},
		{
			name: "duplicate_new_block_maps_to_first_op",
			adds: []add{
				{Op{Type: OpReplace, NewBlock: 5}, block(1)},
				{Op{Type: OpReplace, NewBlock: 5}, block(2)},
			},
			want:    []uint64{5, 5},
			wantIdx: []int{0, 0},
		},
		{
			name: "signed_sort_quirk",
			adds: []add{
				{Op{Type: OpZero, NewBlock: 1 << 31}, nil},
				{Op{Type: OpZero, NewBlock: 5}, nil},
				{Op{Type: OpZero, NewBlock: 1<<32 - 1}, nil},
			},
			// AOSP sorts other_ops as int: 2^31 → INT_MIN, 2^32−1 → −1.
			want: []uint64{1 << 31, 1<<32 - 1, 5},
		},
		{
			name: "invalid_sequence_ops",
			adds: []add{
				{Op{Type: OpSequence}, seqPayload(10, 11)},
				{Op{Type: OpCopy, NewBlock: 10, Source: 1}, nil},
			},
			wantErr: true,
		},
		{
			name: "sequence_length_not_multiple_of_4",
			adds: []add{
				{Op{Type: OpSequence}, []byte{1, 0, 0, 0, 2}},
				{Op{Type: OpCopy, NewBlock: 1, Source: 1}, nil},
			},
			wantErr: true,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := hdrV2(8, 0)
			h.NumMergeOps = c.merged
			bl := newV2Builder(t, h)
			for _, a := range c.adds {
				bl.add(a.op, a.data)
			}
			r, err := parseBytes(t, bl.finalize(), &ReaderOptions{Legacy: c.legacy})
			if c.wantErr {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("want ErrCorrupt, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := newBlocks(r.MergeOrder()); !slices.Equal(got, c.want) {
				t.Fatalf("merge order %v, want %v", got, c.want)
			}
			if c.wantIdx != nil && !slices.Equal(r.MergeIndex(), c.wantIdx) {
				t.Fatalf("merge index %v, want %v", r.MergeIndex(), c.wantIdx)
			}
			if r.MergeOpStart() != c.merged || r.NumOrderedOpsToMerge() != c.ordered {
				t.Fatalf("start %d ordered %d, want %d %d", r.MergeOpStart(), r.NumOrderedOpsToMerge(), c.merged, c.ordered)
			}
			if !slices.Equal(r.SequenceData(), c.sequence) {
				t.Fatalf("sequence %v", r.SequenceData())
			}
			for _, op := range r.MergeOrder() {
				if op.Type.IsMetadata() {
					t.Fatalf("metadata op in merge order: %v", op)
				}
			}
		})
	}
}

func TestMergeOrderV3(t *testing.T) {
	ops := []Op{
		{Type: OpReplace, NewBlock: 9},
		{Type: OpCopy, NewBlock: 3, Source: 30},
		{Type: OpZero, NewBlock: 1},
		{Type: OpCopy, NewBlock: 2, Source: 31},
		{Type: OpZero, NewBlock: 4},
	}
	data := [][]byte{block(1)}
	t.Run("no_sequence_file_order", func(t *testing.T) {
		v := &v3Image{h: newV3Header(8, CompressionNone, 0), ops: ops, data: data}
		v.h.NumMergeOps = 2
		r := mustParse(t, v.build(t), nil)
		if got := newBlocks(r.MergeOrder()); !slices.Equal(got, []uint64{9, 3, 1, 2, 4}) {
			t.Fatalf("merge order %v", got)
		}
		if r.MergeOpStart() != 2 || r.NumOrderedOpsToMerge() != 3 {
			t.Fatalf("start %d ordered %d", r.MergeOpStart(), r.NumOrderedOpsToMerge())
		}
	})
	t.Run("sequence_region", func(t *testing.T) {
		for _, legacy := range []bool{false, true} {
			v := &v3Image{h: newV3Header(8, CompressionNone, 1<<21), ops: ops, data: data, seq: []uint32{2, 3}}
			r := mustParse(t, v.build(t), &ReaderOptions{Legacy: legacy})
			want := []uint64{2, 3, 1, 4, 9}
			if legacy {
				want = []uint64{2, 3, 9, 4, 1}
			}
			if got := newBlocks(r.MergeOrder()); !slices.Equal(got, want) {
				t.Fatalf("legacy=%v merge order %v, want %v", legacy, got, want)
			}
			if !slices.Equal(r.MergeIndex()[:2], []int{3, 1}) || !slices.Equal(r.SequenceData(), []uint32{2, 3}) {
				t.Fatalf("index %v seq %v", r.MergeIndex(), r.SequenceData())
			}
			if r.NumOrderedOpsToMerge() != 2 {
				t.Fatalf("ordered %d", r.NumOrderedOpsToMerge())
			}
			if err := r.VerifyMergeOps(); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("invalid_sequence", func(t *testing.T) {
		v := &v3Image{h: newV3Header(8, CompressionNone, 0), ops: ops, data: data, seq: []uint32{2, 77}}
		_, err := parseBytes(t, v.build(t), nil)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestVerifyMergeOps(t *testing.T) {
	count := func(err error) int {
		if err == nil {
			return 0
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			return len(j.Unwrap())
		}
		return 1
	}
	cases := []struct {
		name string
		seq  []uint32
		ops  []Op
		n    int // violations
	}{
		{"valid_chain", []uint32{1, 2}, []Op{
			{Type: OpCopy, NewBlock: 1, Source: 2}, // reads 2 before it is written
			{Type: OpCopy, NewBlock: 2, Source: 3},
			{Type: OpZero, NewBlock: 3},
		}, 0},
		{"overwritten_source", []uint32{2, 1}, []Op{
			{Type: OpCopy, NewBlock: 1, Source: 2},
			{Type: OpCopy, NewBlock: 2, Source: 3},
		}, 1},
		{"unaligned_xor_next_block", []uint32{8, 1}, []Op{
			{Type: OpXor, NewBlock: 1, Source: 7*4096 + 100}, // reads blocks 7 and 8
			{Type: OpCopy, NewBlock: 8, Source: 20},
		}, 1},
		{"aligned_xor_ok", []uint32{8, 1}, []Op{
			{Type: OpXor, NewBlock: 1, Source: 7 * 4096},
			{Type: OpCopy, NewBlock: 8, Source: 20},
		}, 0},
		{"ordered_after_non_ordered_and_overwrite", nil, []Op{
			// v3 without sequence: file order, so the Zero comes first.
			{Type: OpZero, NewBlock: 9},
			{Type: OpCopy, NewBlock: 5, Source: 6},
			{Type: OpCopy, NewBlock: 6, Source: 5},
		}, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := make([][]byte, len(c.ops))
			for i, op := range c.ops {
				if op.Type == OpXor {
					data[i] = block(1)
				}
			}
			v := &v3Image{h: newV3Header(8, CompressionNone, 0), ops: c.ops, data: data, seq: c.seq}
			r := mustParse(t, v.build(t), nil)
			err := r.VerifyMergeOps()
			if got := count(err); got != c.n {
				t.Fatalf("%d violations, want %d: %v", got, c.n, err)
			}
			if err != nil && !errors.Is(err, ErrMergeOrder) {
				t.Fatalf("not ErrMergeOrder: %v", err)
			}
			var me *MergeOrderError
			if err != nil && !errors.As(err, &me) {
				t.Fatal("not a MergeOrderError")
			}
		})
	}
	t.Run("num_merge_ops_past_end", func(t *testing.T) {
		v := &v3Image{h: newV3Header(8, CompressionNone, 0), ops: []Op{{Type: OpZero, NewBlock: 1}}}
		v.h.NumMergeOps = 2
		r := mustParse(t, v.build(t), nil)
		if count(r.VerifyMergeOps()) != 1 {
			t.Fatal("not reported")
		}
	})
	t.Run("v2_metadata_never_in_order", func(t *testing.T) {
		r := mustParse(t, workedExample(t), nil)
		if err := r.VerifyMergeOps(); err != nil {
			t.Fatal(err)
		}
	})
}
