package vabc

import (
	"strings"
	"testing"

	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/payload"
)

func ext(start, n uint64) *metadata.Extent {
	return &metadata.Extent{StartBlock: &start, NumBlocks: &n}
}

// blocksOf expands extents into block numbers (holes excluded): the naive
// oracle for planMerge's extent index.
func blocksOf(ext []*metadata.Extent) []uint64 {
	var out []uint64
	for _, e := range ext {
		if e.GetStartBlock() == payload.SparseHole {
			continue
		}
		for i := range e.GetNumBlocks() {
			out = append(out, e.GetStartBlock()+i)
		}
	}
	return out
}

// FuzzPlanMerge feeds arbitrary merge hints and SOURCE_COPY / bsdiff
// operations to planMerge and checks its invariants: every sequence entry is
// unique and is either an up-front Copy that a SOURCE_COPY really performs or
// an XOR block of a bsdiff destination.
func FuzzPlanMerge(f *testing.F) {
	f.Add([]byte{0, 4, 10, 4, 4, 0, 1, 2, 3, 2, 0, 2, 20, 1, 3, 3, 1, 100})
	f.Add([]byte{1, 1, 0, 3, 5, 3, 0, 1, 5, 2, 0, 1, 1, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		next := func() uint64 {
			if len(b) == 0 {
				return 0
			}
			v := uint64(b[0])
			b = b[1:]
			return v
		}
		pu := &metadata.PartitionUpdate{PartitionName: new("p")}
		nops := next() % 6
		for range nops {
			typ := metadata.InstallOperation_SOURCE_COPY
			if next()%2 == 1 {
				typ = metadata.InstallOperation_BROTLI_BSDIFF
			}
			op := &metadata.InstallOperation{Type: typ.Enum()}
			op.SrcExtents = []*metadata.Extent{ext(next()%32, next()%8)}
			n := op.SrcExtents[0].GetNumBlocks()
			if typ != metadata.InstallOperation_SOURCE_COPY {
				n = next() % 8
			}
			// The destination is split into up to three extents (one may
			// be a hole for bsdiff ops), in any order.
			for n > 0 {
				k := min(n, 1+next()%4)
				start := next() % 32
				if typ != metadata.InstallOperation_SOURCE_COPY && next()%5 == 0 {
					start = payload.SparseHole
				}
				op.DstExtents = append(op.DstExtents, ext(start, k))
				n -= k
			}
			pu.Operations = append(pu.Operations, op)
		}
		nm := next() % 8
		for range nm {
			m := &metadata.CowMergeOperation{Type: metadata.CowMergeOperation_Type(next() % 3).Enum()}
			m.SrcExtent = ext(next()%40, next()%6)
			m.DstExtent = ext(next()%40, next()%6)
			off := uint32(next() * 20)
			m.SrcOffset = &off
			pu.MergeOperations = append(pu.MergeOperations, m)
		}
		plan, err := planMerge(pu, 4096, 30, next()%2 == 0)
		// Oracle: planMerge's double-write error appears exactly for the
		// payloads writing a block twice.
		owner := map[uint64]bool{}
		twice := false
		for _, op := range pu.Operations {
			for _, d := range blocksOf(op.DstExtents) {
				twice = twice || owner[d]
				owner[d] = true
			}
		}
		if twice != (err != nil && strings.Contains(err.Error(), "a COW cannot express that")) {
			t.Fatalf("block written twice: %v, planMerge error: %v", twice, err)
		}
		if err != nil {
			return
		}
		pairs := map[uint64]uint64{}
		diff := map[uint64]bool{}
		for _, op := range pu.Operations {
			// Positions count holes, as the dst walk does.
			var dpos []uint64
			for _, e := range op.DstExtents {
				for i := range e.GetNumBlocks() {
					if e.GetStartBlock() == payload.SparseHole {
						dpos = append(dpos, payload.SparseHole)
					} else {
						dpos = append(dpos, e.GetStartBlock()+i)
					}
				}
			}
			s := blocksOf(op.SrcExtents)
			for k, d := range dpos {
				if d == payload.SparseHole {
					continue
				}
				if op.GetType() == metadata.InstallOperation_SOURCE_COPY {
					pairs[d] = s[k]
				} else {
					diff[d] = true
				}
			}
		}
		seen := map[uint32]bool{}
		for _, d := range plan.seq {
			if seen[d] {
				t.Fatalf("block %d twice in the sequence", d)
			}
			seen[d] = true
			_, isXor := plan.xor[uint64(d)]
			if plan.copied[uint64(d)] == isXor {
				t.Fatalf("block %d: copied %v xor %v", d, plan.copied[uint64(d)], isXor)
			}
			if isXor && !diff[uint64(d)] {
				t.Fatalf("XOR block %d not written by a bsdiff op", d)
			}
		}
		for _, c := range plan.copies {
			if s, ok := pairs[c[0]]; !ok || s != c[1] || s >= 30 {
				t.Fatalf("copy %v not performed by a SOURCE_COPY", c)
			}
		}
		if len(plan.copies)+len(plan.xor) != len(plan.seq) {
			t.Fatalf("%d copies + %d xor != %d sequence entries", len(plan.copies), len(plan.xor), len(plan.seq))
		}
	})
}

// FuzzCheckVerity feeds arbitrary verity fields to checkVerity: it must not
// panic, and what it accepts lies inside the partition.
func FuzzCheckVerity(f *testing.F) {
	f.Add(uint64(40), uint64(0), uint64(38), uint64(38), uint64(1), uint64(0), uint64(39), uint64(39), uint64(1), uint32(2), "sha256")
	f.Add(uint64(1<<50), uint64(1<<62), uint64(1<<62), uint64(5), uint64(1), uint64(0), uint64(0), uint64(7), uint64(1<<63), uint32(0), "md5")
	f.Fuzz(func(t *testing.T, size, ds, dn, ts, tn, fds, fdn, fs, fn uint64, roots uint32, alg string) {
		pu := &metadata.PartitionUpdate{PartitionName: new("p"),
			NewPartitionInfo:   &metadata.PartitionInfo{Size: &size},
			HashTreeDataExtent: ext(ds, dn), HashTreeExtent: ext(ts, tn), HashTreeAlgorithm: &alg,
			FecDataExtent: ext(fds, fdn), FecExtent: ext(fs, fn), FecRoots: &roots}
		if err := checkVerity(pu, 4096); err != nil {
			return
		}
		if !hasVerity(pu) {
			return
		}
		if int64(size) < 0 {
			t.Fatalf("accepted size %d", size)
		}
		blocks := (size + 4095) / 4096
		for _, e := range []*metadata.Extent{pu.HashTreeExtent, pu.FecExtent} {
			if e.GetNumBlocks() > 0 && e.GetStartBlock()+e.GetNumBlocks() > blocks {
				t.Fatalf("accepted %v in %d blocks", e, blocks)
			}
		}
	})
}
