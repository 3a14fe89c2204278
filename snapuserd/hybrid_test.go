package snapuserd_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/merge"
	"github.com/vabc-go/vabc/snapuserd/snapuserdtest"
)

// TestPlanHybrid checks the hybrid-table planner on generated triples, with
// the merge committed up to step k (base holds the target for steps < k,
// num_merge_ops = k), in both phases: the segments tile the device in
// order; every kernel-served segment serves the target's bytes (base at the
// same offset, source at the op's source, zeros); in the merging phase no
// merge step from k on writes a block under a kernel segment (the
// invariant that lets the merge run under the table) and there are no
// source segments; there is always a daemon segment; the idle plan serves
// Copy ops from the source; a larger minBlocks only folds kernel runs into
// daemon segments.
func TestPlanHybrid(t *testing.T) {
	specs := []snapuserdtest.TripleSpec{
		{Version: 2, Comp: cow.CompressionNone, Blocks: 1024, Seed: 3},
		{Version: 3, Comp: cow.CompressionLz4, Factor: 64 << 10, Blocks: 1024, Seed: 4},
		{Version: 3, Comp: cow.CompressionNone, Factor: 4096, Blocks: 333, Seed: 9},
	}
	const spb = snapuserd.BlockSize / 512
	for _, spec := range specs {
		tr := snapuserdtest.GenTriple(t, spec)
		r, err := cow.NewReader(bytes.NewReader(tr.Cow), int64(len(tr.Cow)), nil)
		if err != nil {
			t.Fatal(err)
		}
		ops, order := r.Ops(), r.MergeIndex()
		for _, k := range []int{0, len(order) / 3, len(order)} {
			cowB := append([]byte(nil), tr.Cow...)
			binary.LittleEndian.PutUint64(cowB[cow.OffsetNumMergeOps:], uint64(k))
			base := append([]byte(nil), tr.Base...)
			written := make([]int, len(tr.Target)/snapuserd.BlockSize+1) // block → step+1 of the op writing it
			for step, i := range order {
				op := &ops[i]
				a, b := op.NewBlock*snapuserd.BlockSize, min((op.NewBlock+op.Blocks())*snapuserd.BlockSize, uint64(len(base)))
				if step < k {
					copy(base[a:b], tr.Target[a:b])
				}
				for blk := op.NewBlock; blk < op.NewBlock+op.Blocks() && blk < uint64(len(written)); blk++ {
					written[blk] = step + 1
				}
			}
			s, err := snapuserd.NewSnapshot("h", bytes.NewReader(cowB), int64(len(cowB)), bytes.NewReader(tr.Source),
				bytes.NewReader(base), int64(len(base)), "h.cow")
			if err != nil {
				t.Fatal(err)
			}
			for _, phase := range []snapuserd.HybridPhase{snapuserd.HybridIdle, snapuserd.HybridMerging} {
				var prevKernel uint64
				for _, minBlocks := range []uint64{0, 1, 8, 64} {
					t.Run(fmt.Sprintf("%s/merged%d/%s/min%d", spec, k, phase, minBlocks), func(t *testing.T) {
						segs := s.PlanHybridPhase(phase, minBlocks)
						var next, kernel uint64
						users := 0
						for i, sg := range segs {
							if sg.Start != next || sg.Length == 0 {
								t.Fatalf("segment %d %+v does not follow sector %d", i, sg, next)
							}
							next += sg.Length
							if sg.Kind == snapuserd.SegUser {
								users++
								if i > 0 && segs[i-1].Kind == snapuserd.SegUser {
									t.Errorf("segments %d and %d both go to the daemon (not merged)", i-1, i)
								}
								continue
							}
							kernel += sg.Length
							if sg.Length < max(minBlocks, 1)*spb {
								t.Errorf("kernel segment %+v shorter than the minimum", sg)
							}
							a, b := sg.Start*512, (sg.Start+sg.Length)*512
							want := tr.Target[a:b]
							var got []byte
							switch sg.Kind {
							case snapuserd.SegBase:
								got = base[a:b]
							case snapuserd.SegZero:
								got = make([]byte, b-a)
							case snapuserd.SegSource:
								if phase == snapuserd.HybridMerging {
									t.Fatalf("source segment %+v in the merging phase", sg)
								}
								got = tr.Source[sg.Source*512 : sg.Source*512+(b-a)]
							}
							if !bytes.Equal(got, want) {
								t.Fatalf("%v segment %+v serves bytes that differ from the target", sg.Kind, sg)
							}
							if phase == snapuserd.HybridMerging && sg.Kind == snapuserd.SegBase {
								for blk := sg.Start / spb; blk < (sg.Start+sg.Length)/spb; blk++ {
									if w := written[blk]; w > k {
										t.Fatalf("block %d under %v segment %+v is written by merge step %d (merged: %d)", blk, sg.Kind, sg, w-1, k)
									}
								}
							}
						}
						if next*512 != uint64(len(tr.Target)) {
							t.Fatalf("segments cover %d bytes of %d", next*512, len(tr.Target))
						}
						if users == 0 {
							t.Error("no daemon segment")
						}
						if minBlocks > 1 && kernel > prevKernel {
							t.Errorf("min %d serves %d sectors by the kernel, more than a smaller minimum (%d)", minBlocks, kernel, prevKernel)
						}
						prevKernel = kernel
						if minBlocks <= 1 && k == 0 && phase == snapuserd.HybridMerging {
							want := uint64(tr.Unmapped+tr.Counts[cow.OpZero]) * spb
							if kernel != want && kernel+spb != want {
								t.Errorf("%d kernel sectors, want %d (unmapped + zero blocks)", kernel, want)
							}
						}
						if k == 0 && phase == snapuserd.HybridIdle && tr.Counts[cow.OpCopy] > 0 {
							if st := snapuserd.HybridStats(segs); minBlocks <= 1 && st[snapuserd.SegSource] == 0 {
								t.Errorf("idle plan with %d Copy ops has no source segment", tr.Counts[cow.OpCopy])
							}
						}
					})
				}
			}
		}
	}
}

// TestHybridTargets checks the table lines of a plan: dm-user segments
// carry their device offset, linear ones their device and sector.
func TestHybridTargets(t *testing.T) {
	segs := []snapuserd.Segment{
		{Start: 0, Length: 16, Kind: snapuserd.SegBase},
		{Start: 16, Length: 8, Kind: snapuserd.SegUser},
		{Start: 24, Length: 8, Kind: snapuserd.SegSource, Source: 800},
		{Start: 32, Length: 8, Kind: snapuserd.SegZero},
	}
	var got []string
	for _, tg := range snapuserd.HybridTargets(segs, "sys-init", "/dev/b", "/dev/s") {
		got = append(got, tg.String())
	}
	want := []string{"0 16 linear /dev/b 0", "16 8 user 16 8 sys-init", "24 8 linear /dev/s 800", "32 8 zero "}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("targets %q, want %q", got, want)
	}
}

// checkKernelSegments fails when a kernel-served segment of segs does not serve the
// target's bytes from base and source.
func checkKernelSegments(t *testing.T, what string, segs []snapuserd.Segment, base, source, target []byte) {
	t.Helper()
	for _, sg := range segs {
		a, b := sg.Start*512, (sg.Start+sg.Length)*512
		var got []byte
		switch sg.Kind {
		case snapuserd.SegUser:
			continue
		case snapuserd.SegBase:
			got = base[a:b]
		case snapuserd.SegSource:
			got = source[sg.Source*512 : sg.Source*512+(b-a)]
		case snapuserd.SegZero:
			got = make([]byte, b-a)
		}
		if !bytes.Equal(got, target[a:b]) {
			t.Fatalf("%s: %v segment %+v does not serve the target", what, sg.Kind, sg)
		}
	}
}

// TestHybridPlanAcrossMerge runs the real merge engine in place (source = base) and, at
// every durable state it passes through — and at the crash state of a window written to
// the base but not committed (COW with read_ahead_state 2, base already overwritten) —
// plans both phases from that COW: every kernel segment serves the target from that base
// (the idle plan is what a reboot mid-merge maps), and the merging plan's base segments
// still hold the target in every later state (the merge never rewrites them).
func TestHybridPlanAcrossMerge(t *testing.T) {
	var persisted, sources, zeros uint64 // over all pairs: the rules under test were exercised
	pairs := sameSizePairs(31, 1500)
	for _, name := range []string{"shuffled", "shifted", "zeros"} {
		pair, ok := pairs[name]
		if !ok {
			continue
		}
		t.Run(name, func(t *testing.T) {
			p := newVABPart(t, t.TempDir(), "system", pair, 3, false)
			cowB, r0 := p.readCOW(t)
			type st struct {
				kind      string
				cow, base []byte
			}
			states := []st{{"start", cowB, pair.Source}}
			cf, bf := faultfs.NewMemFile("system.cow", cowB), faultfs.NewMemFile("system.img", pair.Source)
			e, err := merge.New(cf, bf, r0, &merge.Options{OnCheckpoint: func(c merge.Checkpoint) {
				states = append(states, st{c.Kind.String(), cf.Bytes(), bf.Bytes()})
			}})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Run(t.Context()); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(bf.Bytes(), pair.Target) {
				t.Fatal("merged base differs from the target")
			}
			// Crash states: a persisted window's COW with the base of the next state (the
			// window's blocks written).
			var crash []st
			for i := 0; i+1 < len(states); i++ {
				if states[i].kind == merge.WindowPersisted.String() {
					persisted++
					crash = append(crash, st{"window written, not committed", states[i].cow, states[i+1].base})
				}
			}
			for i, s := range append(states, crash...) {
				sn, err := snapuserd.NewSnapshot("h", bytes.NewReader(s.cow), int64(len(s.cow)), bytes.NewReader(s.base),
					bytes.NewReader(s.base), int64(len(s.base)), "h.cow")
				if err != nil {
					t.Fatalf("state %d (%s): %v", i, s.kind, err)
				}
				idle := sn.PlanHybridPhase(snapuserd.HybridIdle, 1)
				sources += snapuserd.HybridStats(idle)[snapuserd.SegSource]
				zeros += snapuserd.HybridStats(idle)[snapuserd.SegZero]
				checkKernelSegments(t, fmt.Sprintf("state %d (%s), idle plan", i, s.kind), idle, s.base, s.base, pair.Target)
				merging := sn.PlanHybridPhase(snapuserd.HybridMerging, 1)
				checkKernelSegments(t, fmt.Sprintf("state %d (%s), merging plan", i, s.kind), merging, s.base, s.base, pair.Target)
				if i < len(states) {
					for j := i + 1; j < len(states); j++ {
						checkKernelSegments(t, fmt.Sprintf("merging plan of state %d (%s) in later state %d (%s)", i, s.kind, j, states[j].kind),
							merging, states[j].base, states[j].base, pair.Target)
					}
				}
			}
		})
	}
	if persisted == 0 || sources == 0 || zeros == 0 {
		t.Errorf("persisted windows %d, idle source sectors %d, zero sectors %d: a rule went untested", persisted, sources, zeros)
	}
}

// TestPlanHybridFileBound: PlanHybridFile plans from a COW file, and a plan with more
// segments than the bound folds more kernel runs into the daemon until it fits.
func TestPlanHybridFileBound(t *testing.T) {
	tr := snapuserdtest.GenTriple(t, snapuserdtest.TripleSpec{Version: 3, Comp: cow.CompressionLz4, Factor: 4096, Blocks: 1024, Seed: 5})
	path := t.TempDir() + "/h.cow"
	if err := os.WriteFile(path, tr.Cow, 0o644); err != nil {
		t.Fatal(err)
	}
	sectors := uint64(len(tr.Target) / 512)
	full, err := snapuserd.PlanHybridFile(path, sectors, snapuserd.HybridIdle, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(full) <= 8 {
		t.Fatalf("unbounded plan has only %d segments", len(full))
	}
	defer snapuserd.SetHybridMaxSegments(8)()
	small, err := snapuserd.PlanHybridFile(path, sectors, snapuserd.HybridIdle, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(small) > 8 || len(small) == 0 {
		t.Fatalf("bounded plan has %d segments, want 1..8", len(small))
	}
	checkKernelSegments(t, "full plan", full, tr.Base, tr.Source, tr.Target)
	checkKernelSegments(t, "bounded plan", small, tr.Base, tr.Source, tr.Target)
	if _, err := snapuserd.PlanHybridFile(path+".missing", sectors, snapuserd.HybridIdle, 1); err == nil {
		t.Error("missing COW: no error")
	}
	if _, err := snapuserd.PlanHybridFile(path, 0, snapuserd.HybridIdle, 1); err == nil {
		t.Error("0 sectors: no error")
	}
}
