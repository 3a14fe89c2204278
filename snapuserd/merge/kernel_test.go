package merge

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
)

// TestKernelMerge drives the kernel-driven mode as the legacy daemon does:
// the "kernel" writes the target blocks of the next ops itself, then
// reports them. num_merge_ops moves per window for ordered ops (and per
// report otherwise), ReadBlock serves the target throughout, and bad
// reports are refused without a commit.
func TestKernelMerge(t *testing.T) {
	for _, tc := range []struct {
		name   string
		gen    genConfig
		window int
	}{
		{"v2-scratch", genConfig{seed: 21, blocks: 1500, version: 2, scratch: true}, 0},
		{"v3-scratch-w29", genConfig{seed: 22, blocks: 1500, version: 3, scratch: true}, 29},
		{"v2-no-scratch", genConfig{seed: 23, blocks: 1500, version: 2}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := generate(t, tc.gen)
			cf := faultfs.NewMemFile("test.cow", img.cowImg)
			bf := faultfs.NewMemFile("base.img", img.base)
			e, err := New(cf, bf, img.source, &Options{WindowBlocks: tc.window, AllowUnsafeInPlace: true})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.KernelMerged(1); err == nil {
				t.Fatal("KernelMerged before StartKernelMerge succeeded")
			}
			if err := e.StartKernelMerge(); err != nil {
				t.Fatal(err)
			}
			if err := e.StartKernelMerge(); err == nil {
				t.Fatal("second StartKernelMerge succeeded")
			}
			ra := e.ReadAheadOps()
			if tc.gen.scratch != (ra > 0) {
				t.Fatalf("ReadAheadOps %d with scratch=%v", ra, tc.gen.scratch)
			}
			if _, err := e.KernelMerged(0); err == nil {
				t.Fatal("KernelMerged(0) succeeded")
			}
			if ra > 0 && img.nOrd > ra {
				if _, err := e.KernelMerged(ra + 1); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("report across the window end: %v", err)
				}
			}
			if _, err := e.KernelMerged(len(img.order) + 1); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("report past the ops: %v", err)
			}
			nmo := func() uint64 { return binary.LittleEndian.Uint64(cf.Bytes()[cow.OffsetNumMergeOps:]) }
			if nmo() != 0 {
				t.Fatal("a refused report committed")
			}
			rng := rand.New(rand.NewPCG(5, 5))
			blk := make([]byte, bs)
			done := 0
			for done < len(img.order) {
				n := 1 + rng.IntN(9)
				if done < img.nOrd && ra > 0 {
					n = min(n, ra-(done%ra), img.nOrd-done) // the kernel never crosses a window
				}
				n = min(n, len(img.order)-done)
				for i := done; i < done+n; i++ {
					op := &img.order[i]
					for k := uint64(0); k < op.Blocks(); k++ {
						b := op.NewBlock + k
						if err := faultfs.WriteFull(bf, img.target[b*bs:(b+1)*bs], int64(b*bs)); err != nil {
							t.Fatal(err)
						}
					}
				}
				if err := bf.Sync(); err != nil {
					t.Fatal(err)
				}
				committed, err := e.KernelMerged(n)
				if err != nil {
					t.Fatalf("after %d ops: %v", done, err)
				}
				done += n
				windowEnd := ra == 0 || done >= img.nOrd || done%ra == 0
				if committed != windowEnd || (committed && nmo() != uint64(done)) {
					t.Fatalf("after %d ops: committed=%v num_merge_ops=%d", done, committed, nmo())
				}
				for _, b := range []int{rng.IntN(tc.gen.blocks), rng.IntN(tc.gen.blocks)} {
					if err := e.ReadBlock(uint64(b), blk); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(blk, img.target[b*bs:(b+1)*bs]) {
						t.Fatalf("after %d ops: block %d differs from the target", done, b)
					}
				}
			}
			if p := e.Progress(); p.Phase != PhaseComplete || p.NumMergeOps != uint64(len(img.order)) {
				t.Fatalf("progress %+v", p)
			}
			if _, err := e.KernelMerged(1); err == nil {
				t.Fatal("report after completion succeeded")
			}
		})
	}
}
