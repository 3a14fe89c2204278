package snapuserd_test

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/cow/create/createtest"
	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/proto"
)

// separateSourcePart lays a partition out as libsnapshot does whenever the
// partition existed in the old slot: the source device (<part>-src, the
// init backing_device) is its own file holding the old image, and the base
// device (base_path_merge, the partition itself) has the target's size,
// holds the old data wherever the COW maps nothing (reads of those blocks
// come from base) and garbage in every block the COW writes. A merge or a
// read that takes a Copy/Xor source from base instead of the source device
// therefore returns garbage.
func separateSourcePart(t *testing.T, dir, misc string, pair createtest.Pair, version int) (p vabPart, src string) {
	t.Helper()
	p = newVABPart(t, dir, misc, pair, version, false)
	r, err := cow.Open(p.cow, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	base := make([]byte, len(pair.Target))
	copy(base, pair.Source)
	rng := rand.New(rand.NewPCG(uint64(len(base)), 5))
	for _, op := range r.MergeOrder() {
		// A partial last block of the device is mapped as a whole block.
		for i := op.NewBlock * 4096; i < min((op.NewBlock+op.Blocks())*4096, uint64(len(base))); i++ {
			base[i] = byte(rng.Uint32())
		}
	}
	if err := os.WriteFile(p.base, base, 0o644); err != nil {
		t.Fatal(err)
	}
	src = filepath.Join(dir, misc+"-src.img")
	if err := os.WriteFile(src, pair.Source, 0o444); err != nil {
		t.Fatal(err)
	}
	return p, src
}

// TestMergeSeparateSource: served reads before, during and after the merge
// and the merged base are exactly the target when backing_device and
// base_path_merge are different devices (growing, shrinking and same-size
// partitions), and the source device is not modified.
func TestMergeSeparateSource(t *testing.T) {
	all := map[string]createtest.Pair{}
	for _, pr := range createtest.Pairs(21, 700) {
		all[pr.Name] = pr
	}
	for _, tc := range []struct {
		pair    string
		version int
	}{{"shuffled", 3}, {"shifted", 2}, {"grow", 3}, {"shrink", 2}} {
		t.Run(tc.pair, func(t *testing.T) {
			pair, ok := all[tc.pair]
			if !ok {
				t.Fatalf("no createtest pair %q", tc.pair)
			}
			// Devices are whole blocks.
			pair.Source = pair.Source[:len(pair.Source)/4096*4096]
			pair.Target = pair.Target[:len(pair.Target)/4096*4096]
			dir := t.TempDir()
			p, src := separateSourcePart(t, dir, "system", pair, tc.version)
			fe := &snapuserd.EmulatedDmUser{Workers: 2}
			m := newMergeManager(fe, snapuserd.MergeConfig{})
			defer m.Shutdown()
			n, err := m.InitHandler(proto.InitRequest{Misc: p.misc, Cow: p.cow, Backing: src, BasePath: p.base})
			if err != nil {
				t.Fatal(err)
			}
			if n != uint64(len(pair.Target)/512) {
				t.Fatalf("init: %d sectors, want the base device's %d", n, len(pair.Target)/512)
			}
			if err := m.StartHandler(p.misc); err != nil {
				t.Fatal(err)
			}
			readAll := func(when string) {
				t.Helper()
				got := make([]byte, len(p.target))
				if _, err := fe.Target(p.misc).ReadAt(got, 0); err != nil {
					t.Fatalf("%s: %v", when, err)
				}
				if i := firstDiff(got, p.target); i >= 0 {
					t.Fatalf("%s: byte %d (block %d) differs from the target", when, i, i/4096)
				}
			}
			readAll("before initiate_merge")
			stop := make(chan struct{})
			var nReads atomic.Int64
			wg := randomReader(t, fe, []vabPart{p}, 3, stop, &nReads)
			if err := m.InitiateMerge(p.misc); err != nil {
				close(stop)
				wg.Wait()
				t.Fatalf("initiate_merge: %v", err)
			}
			waitFor(t, "merge", func() bool { return m.MergeStatus(p.misc) == proto.StatusMergeComplete })
			close(stop)
			wg.Wait()
			readAll("after the merge")
			base, err := os.ReadFile(p.base)
			if err != nil {
				t.Fatal(err)
			}
			if i := firstDiff(base, p.target); i >= 0 {
				t.Fatalf("merged base: byte %d (block %d) differs from the target", i, i/4096)
			}
			if b, err := os.ReadFile(src); err != nil || !bytes.Equal(b, pair.Source) {
				t.Fatalf("the source device changed (%v)", err)
			}
			t.Logf("%d verified reads during the merge", nReads.Load())
		})
	}
}
