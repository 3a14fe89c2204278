package snapuserd_test

import (
	"bytes"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/snapuserdtest"
)

// TestPlanHybrid checks the hybrid-table planner on generated triples: the
// segments tile the device in order, every linear segment's target bytes are
// the base device's bytes at the same offset (what dm-linear would serve),
// with minBlocks 1 exactly the unmapped blocks are linear, and a larger
// minBlocks only folds linear runs into daemon segments.
func TestPlanHybrid(t *testing.T) {
	specs := []snapuserdtest.TripleSpec{
		{Version: 2, Comp: cow.CompressionNone, Blocks: 1024, Seed: 3},
		{Version: 3, Comp: cow.CompressionLz4, Factor: 64 << 10, Blocks: 1024, Seed: 4},
		{Version: 3, Comp: cow.CompressionNone, Factor: 4096, Blocks: 333, Seed: 9},
	}
	for _, spec := range specs {
		t.Run(spec.String(), func(t *testing.T) {
			tr := snapuserdtest.GenTriple(t, spec)
			s := snapshotOf(t, tr)
			for _, minBlocks := range []uint64{0, 1, 8, 64} {
				segs := s.PlanHybrid(minBlocks)
				var next, linear uint64
				for i, sg := range segs {
					if sg.Start != next || sg.Length == 0 {
						t.Fatalf("min %d: segment %d %+v does not follow sector %d", minBlocks, i, sg, next)
					}
					if i > 0 && segs[i-1].Linear == sg.Linear {
						t.Errorf("min %d: segments %d and %d both linear=%v (not merged)", minBlocks, i-1, i, sg.Linear)
					}
					next += sg.Length
					if !sg.Linear {
						continue
					}
					if sg.Length < max(minBlocks, 1)*snapuserd.BlockSize/512 {
						t.Errorf("min %d: linear segment %+v shorter than the minimum", minBlocks, sg)
					}
					linear += sg.Length
					a, b := sg.Start*512, (sg.Start+sg.Length)*512
					if !bytes.Equal(tr.Target[a:b], tr.Base[a:b]) {
						t.Fatalf("min %d: linear segment %+v serves base bytes that differ from the target", minBlocks, sg)
					}
				}
				if next*512 != uint64(len(tr.Target)) {
					t.Fatalf("min %d: segments cover %d bytes of %d", minBlocks, next*512, len(tr.Target))
				}
				if minBlocks <= 1 && linear != uint64(tr.Unmapped)*snapuserd.BlockSize/512 {
					t.Errorf("min %d: %d linear sectors, %d unmapped blocks", minBlocks, linear, tr.Unmapped)
				}
			}
		})
	}
}
