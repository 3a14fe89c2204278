package create

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/vabc-go/vabc/cow/create/createtest"
)

const bs = createtest.BlockSize

// simulateMerge applies the plan to a copy of src the way an in-place merge
// does: ordered ops in p.Order, then Replace and Zero ascending; it checks
// the VerifyMergeOps rule (no op reads a block an earlier op overwrote) as it
// goes and returns the merged image cut to the target size.
func simulateMerge(t *testing.T, p *Plan, src, tgt []byte) []byte {
	t.Helper()
	n := max(p.SourceBlocks(), p.TargetBlocks())
	base := make([]byte, n*uint64(bs))
	copy(base, src)
	written := make([]bool, n)
	seen := make([]bool, len(p.Blocks))
	blk := func(b uint64) []byte { return base[b*uint64(bs) : (b+1)*uint64(bs)] }
	for _, t32 := range p.Order {
		tb := uint64(t32)
		if seen[tb] {
			t.Fatalf("block %d twice in merge order", tb)
		}
		seen[tb] = true
		op := p.Blocks[tb]
		var reads []uint64
		for _, r := range op.reads(bs, reads) {
			if written[r] {
				t.Fatalf("op for block %d (%s) reads block %d already overwritten", tb, op.Kind, r)
			}
		}
		switch op.Kind {
		case KindCopy:
			copy(blk(tb), blk(op.Src))
		case KindXor:
			x := make([]byte, bs)
			copy(x, base[op.Src:op.Src+uint64(bs)])
			want := make([]byte, bs)
			copy(want, tgt[min(int(tb)*bs, len(tgt)):min(int(tb+1)*bs, len(tgt))])
			for i := range x {
				x[i] ^= want[i] ^ x[i] // the COW stores target^source; merge xors it back
			}
			copy(blk(tb), x)
		default:
			t.Fatalf("block %d of kind %s in merge order", tb, op.Kind)
		}
		written[tb] = true
	}
	for b, op := range p.Blocks {
		switch op.Kind {
		case KindCopy, KindXor:
			if !seen[b] {
				t.Fatalf("ordered op for block %d missing from merge order", b)
			}
		case KindReplace:
			clear(blk(uint64(b)))
			copy(blk(uint64(b)), tgt[b*bs:min((b+1)*bs, len(tgt))])
		case KindZero:
			clear(blk(uint64(b)))
		}
	}
	return base[:p.TargetSize]
}

func analyze(t *testing.T, src, tgt []byte, opts Options) *Plan {
	t.Helper()
	p, err := Analyze(t.Context(), Image{bytes.NewReader(src), int64(len(src)), "src"},
		Image{bytes.NewReader(tgt), int64(len(tgt)), "tgt"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAnalyzePairs(t *testing.T) {
	for _, pair := range createtest.Pairs(1, 256) {
		for _, xor := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/xor=%v", pair.Name, xor), func(t *testing.T) {
				p := analyze(t, pair.Source, pair.Target, Options{Xor: xor, Threads: 2})
				got := simulateMerge(t, p, pair.Source, pair.Target)
				if !bytes.Equal(got, pair.Target) {
					t.Fatalf("merged image differs from target")
				}
				t.Logf("%+v", p.Stats)
				if xor && pair.Name == "shifted" && p.Stats.Xor == 0 {
					t.Errorf("no xor ops for in-place edits")
				}
				if !xor && p.Stats.Xor != 0 {
					t.Errorf("xor ops without Xor option")
				}
				if pair.Name == "shuffled" {
					if p.Stats.Copy < 100 {
						t.Errorf("only %d copies in shuffled image", p.Stats.Copy)
					}
					if p.Stats.CyclesBroken == 0 {
						t.Errorf("no cycles broken in shuffled image")
					}
				}
			})
		}
	}
}

// TestAnalyzeDeterministic: the plan does not depend on the thread count.
func TestAnalyzeDeterministic(t *testing.T) {
	pair := createtest.Pairs(7, 1100)[2] // shuffled, > 4 chunks
	ref := analyze(t, pair.Source, pair.Target, Options{Xor: true, Threads: 1})
	for _, th := range []int{2, 3, 8} {
		p := analyze(t, pair.Source, pair.Target, Options{Xor: true, Threads: th})
		if !slices.Equal(p.Blocks, ref.Blocks) || !slices.Equal(p.Order, ref.Order) || !slices.Equal(p.Broken, ref.Broken) {
			t.Fatalf("threads=%d: plan differs from threads=1", th)
		}
	}
}

func TestOrder(t *testing.T) {
	c := func(src uint64) BlockOp { return BlockOp{Kind: KindCopy, Src: src} }
	u := BlockOp{}
	r := BlockOp{Kind: KindReplace}
	tests := []struct {
		name   string
		blocks []BlockOp
		order  []uint32
		broken []uint32
	}{
		{"empty", []BlockOp{u, u}, nil, nil},
		// 0←1, 1←2, 2←3: 0 must go before 1 (1 is overwritten by op 1)...
		{"chain", []BlockOp{c(1), c(2), c(3), u}, []uint32{0, 1, 2}, nil},
		{"reverse chain", []BlockOp{u, c(0), c(1), c(2)}, []uint32{3, 2, 1}, nil},
		{"swap", []BlockOp{c(1), c(0)}, []uint32{1}, []uint32{0}},
		{"3-cycle with tail", []BlockOp{c(1), c(2), c(0), c(2)}, []uint32{3, 1, 2}, []uint32{0}},
		{"two cycles", []BlockOp{c(1), c(0), c(3), c(2), r}, []uint32{1, 3}, []uint32{0, 2}},
		{"fan-in", []BlockOp{c(3), c(3), c(3), c(4), u}, []uint32{0, 1, 2, 3}, nil},
		{"self copy reads own block", []BlockOp{c(0), u}, []uint32{0}, nil},
		{"unaligned xor straddles", []BlockOp{{Kind: KindXor, Src: 10}, c(5), u, u, u, u}, []uint32{0, 1}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			blocks := slices.Clone(tc.blocks)
			order, broken, err := Order(blocks, bs)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(order, tc.order) || !slices.Equal(broken, tc.broken) {
				t.Fatalf("order %v broken %v, want %v %v", order, broken, tc.order, tc.broken)
			}
			for _, b := range broken {
				if blocks[b].Kind != KindReplace {
					t.Errorf("broken block %d is %s", b, blocks[b].Kind)
				}
			}
		})
	}
}

// TestOrderLongCycle: one cycle through every block breaks exactly once.
func TestOrderLongCycle(t *testing.T) {
	const n = 5000
	blocks := make([]BlockOp, n)
	for i := range blocks {
		blocks[i] = BlockOp{Kind: KindCopy, Src: uint64((i + 1) % n)}
	}
	order, broken, err := Order(blocks, bs)
	if err != nil {
		t.Fatal(err)
	}
	if len(broken) != 1 || len(order) != n-1 {
		t.Fatalf("broken %d, order %d", len(broken), len(order))
	}
}

func TestAnalyzeCanceled(t *testing.T) {
	pair := createtest.Pairs(1, 64)[0]
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := Analyze(ctx, Image{bytes.NewReader(pair.Source), int64(len(pair.Source)), "src"},
		Image{bytes.NewReader(pair.Target), int64(len(pair.Target)), "tgt"}, Options{})
	if err == nil {
		t.Fatal("no error after cancel")
	}
}
