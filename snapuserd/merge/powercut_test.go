package merge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
)

// modelRing, set on Linux by uring_model_linux_test.go, builds the io_uring
// model; fsyncs counts the FSYNC SQEs it executed.
var modelRing func(f faultfs.File, fsyncs *int) ringWriter

// syncCut cuts the power at the at-th Sync call (0-based): that call and
// every call after it fail, so the writes issued since each file's last
// completed Sync are exactly the unsynced ones.
type syncCut struct {
	at    int64
	syncs atomic.Int64
	cut   atomic.Bool
}

func (c *syncCut) MaybeError(op faultfs.Op) error {
	if c.cut.Load() {
		return &faultfs.InjectedError{Op: op}
	}
	if op.Kind == faultfs.OpSync && c.syncs.Add(1)-1 == c.at {
		c.cut.Store(true)
		return &faultfs.InjectedError{Op: op}
	}
	return nil
}

// survivorSets are the (COW, base) survivor sets tried at each cut. Between
// them they catch every missing fsync: a lost scratch-data sync leaves
// read_ahead_state 2 over stale entries (COW keeps the last / all but the
// first); a lost state sync lets base writes land while state 2 is lost
// (COW none, base all); a lost commit sync drops num_merge_ops under the
// next window's entries (COW all but the first); a lost base sync lets the
// commit survive without the data (COW all, base none).
var survivorSets = []struct {
	name           string
	cowKeep, bKeep func(i, n int) bool
}{
	{"none/none", faultfs.KeepNone, faultfs.KeepNone},
	{"last/none", faultfs.KeepLast, faultfs.KeepNone},
	{"last/last", faultfs.KeepLast, faultfs.KeepLast},
	{"all-but-first/all-but-first", faultfs.KeepAllButFirst, faultfs.KeepAllButFirst},
	{"all/none", faultfs.KeepAll, faultfs.KeepNone},
	{"none/all", faultfs.KeepNone, faultfs.KeepAll},
}

// TestPowerCutAtEverySync is the deterministic power-loss test: for every
// Sync of a merge (and once after it completed) the power is cut there, and
// each file keeps its durable image plus an adversarial set of its unsynced
// writes (none; only the last; all but the first; all), independently for
// the COW and the base. The state must pass Check, AOSP's recovery rule must
// produce the target, and a new engine must finish to the exact target; a
// completed merge must be durable as it stands. Removing any single fsync of
// the merge (including the scratch-data sync before read_ahead_state 2 and
// the io_uring FSYNC) fails this test.
func TestPowerCutAtEverySync(t *testing.T) {
	variants := []struct {
		name  string
		gen   genConfig
		opts  Options
		uring bool
	}{
		{"v2", genConfig{seed: 201, blocks: 450, version: 2, scratch: true}, Options{WindowBlocks: 150, replaceCommitBlocks: 64}, false},
		{"v3-real-lz4", genConfig{seed: 202, blocks: 450, version: 3, scratch: true, real: true, comp: cow.CompressionLz4}, Options{WindowBlocks: 100, MergeSize: 16, replaceCommitBlocks: 64}, false},
		{"v2-no-scratch", genConfig{seed: 209, blocks: 160, version: 2}, Options{replaceCommitBlocks: 32}, false},
		{"v2-moves", genConfig{seed: 210, blocks: 450, version: 2, scratch: true, moves: true}, Options{WindowBlocks: 40, replaceCommitBlocks: 64}, false},
		{"v3-backing", genConfig{seed: 204, blocks: 450, version: 3, scratch: true, backing: true}, Options{WindowBlocks: 150, replaceCommitBlocks: 64}, false},
		// One run per op, 16-op windows: full windows end with a full
		// batch and a plain fsync, the last one with a drained FSYNC SQE.
		{"v2-io_uring", genConfig{seed: 205, blocks: 200, version: 2, scratch: true}, Options{WindowBlocks: 16, MergeSize: 1, IOUring: true, replaceCommitBlocks: 64}, true},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			if v.uring {
				if modelRing == nil {
					t.Skip("io_uring model is Linux-only")
				}
				ringFsyncs := 0
				testNewRing = func(f faultfs.File) ringWriter { return modelRing(f, &ringFsyncs) }
				defer func() {
					testNewRing = nil
					if !t.Failed() && ringFsyncs == 0 {
						t.Error("no FSYNC went through the io_uring model")
					}
				}()
			}
			img := generate(t, v.gen)
			cf, bf := img.files()
			count := &syncCut{at: -1}
			g := &faultfs.Group{Inj: count}
			opts, _ := withBacking(img, v.opts, g.Wrap)
			var kinds [4]int
			opts.OnCheckpoint = func(c Checkpoint) { kinds[c.Kind]++ }
			e, err := runMerge(t, img, g.Wrap(cf), g.Wrap(bf), &opts)
			if err != nil {
				t.Fatal(err)
			}
			if v.gen.moves && (kinds[WindowPersisted] == 0 || kinds[WindowPersisted] == kinds[WindowCommitted]) {
				t.Fatalf("moves: %d of %d windows persisted; want some with and some without scratch", kinds[WindowPersisted], kinds[WindowCommitted])
			}
			if v.uring {
				if n, ferr := e.IOURing(); n == 0 || ferr != nil || e.IOURingReads() == 0 {
					t.Fatalf("io_uring path not taken: %d writes, %d reads, %v", n, e.IOURingReads(), ferr)
				}
			}
			total := count.syncs.Load()
			cases := 0
			for k := int64(0); k <= total; k++ {
				for _, ss := range survivorSets {
					powerCut(t, img, v.opts, k, total, ss.cowKeep, ss.bKeep, fmt.Sprintf("cut at sync %d/%d, survivors (COW/base) %s", k, total, ss.name))
					cases++
				}
			}
			t.Logf("%d syncs per merge (%d windows, %d persisted; %d replace commits), %d power cuts",
				total, kinds[WindowCommitted], kinds[WindowPersisted], kinds[ReplaceCommitted], cases)
		})
	}
}

func powerCut(t *testing.T, img *image, vopts Options, k, total int64, cowKeep, baseKeep func(i, n int) bool, what string) {
	t.Helper()
	cf, bf := img.files()
	g := &faultfs.Group{Inj: &syncCut{at: k}}
	opts, bk := withBacking(img, vopts, g.Wrap)
	e, err := New(g.Wrap(cf), g.Wrap(bf), img.source, &opts)
	if err == nil {
		err = e.Run(context.Background())
	}
	checkBacking(t, img, bk)
	switch {
	case k < total && !errors.Is(err, faultfs.ErrInjected):
		t.Fatalf("%s: run ended with %v, want the power cut", what, err)
	case k == total && err != nil:
		t.Fatalf("%s: uncut run: %v", what, err)
	}
	cf = cf.CrashClone(faultfs.CrashCloneConfig{Keep: cowKeep})
	bf = bf.CrashClone(faultfs.CrashCloneConfig{Keep: baseKeep})
	b := cf.Bytes()
	st, err := Check(bytes.NewReader(b), int64(len(b)), "test.cow", img.source)
	if err != nil {
		t.Fatalf("%s: Check: %v", what, err)
	}
	if k == total {
		// Run returned: libsnapshot may now collapse the device.
		if !st.Complete {
			t.Fatalf("%s: merge reported complete but the durable num_merge_ops is %d of %d", what, st.NumMergeOps, st.TotalOps)
		}
		if d := diffBlocks(bf.Bytes(), img.target); d != "" {
			t.Fatalf("%s: merge reported complete but the durable base differs: %s", what, d)
		}
		return
	}
	if got := img.resume(t, b, bf.Bytes()); !bytes.Equal(got, img.target) {
		t.Fatalf("%s: AOSP recovery: %s", what, diffBlocks(got, img.target))
	}
	opts, bk = withBacking(img, vopts, nil)
	if _, err := runMerge(t, img, cf, bf, &opts); err != nil {
		t.Fatalf("%s: resume: %v", what, err)
	}
	checkBacking(t, img, bk)
	if d := diffBlocks(bf.Bytes(), img.target); d != "" {
		t.Fatalf("%s: after resume: %s", what, d)
	}
}

// TestPowerCutInPlaceXor: a window whose only overlap is Xor ops reading
// their own destination block (aligned, and unaligned over two blocks) must
// still go through the scratch region: replaying such an op from the source
// device after a crash would apply its XOR twice. Power cuts at every sync,
// as TestPowerCutAtEverySync.
func TestPowerCutInPlaceXor(t *testing.T) {
	nb := 32
	base := make([]byte, nb*bs)
	fillRandom(rand.New(rand.NewPCG(7, 7)), base)
	pay := func(c byte) []byte { return bytes.Repeat([]byte{c}, bs) }
	src := &fakeSource{order: []cow.Op{
		{Type: cow.OpCopy, NewBlock: 20, Source: 12},
		{Type: cow.OpXor, NewBlock: 5, Source: 5 * bs, DataLength: bs},
		{Type: cow.OpXor, NewBlock: 9, Source: 8*bs + 100, DataLength: bs},
		{Type: cow.OpReplace, NewBlock: 25, DataLength: bs},
	}, payload: map[uint64][]byte{5: pay(0x5a), 9: pay(0xa5), 25: pay(0x33)}}
	target := append([]byte(nil), base...)
	for _, op := range src.order {
		d := target[op.NewBlock*bs : (op.NewBlock+1)*bs]
		switch op.Type {
		case cow.OpCopy:
			copy(d, base[op.Source*bs:(op.Source+1)*bs])
		case cow.OpXor:
			for j := range d {
				d[j] = base[int(op.Source)+j] ^ src.payload[op.NewBlock][j]
			}
		case cow.OpReplace:
			copy(d, src.payload[op.NewBlock])
		}
	}
	img := &image{version: 2, scratch: true, base: base, target: target, src: src, source: src,
		order: src.order, cowImg: makeCOW(t, 2, true), nOrd: 3}
	cf, bf := img.files()
	count := &syncCut{at: -1}
	g := &faultfs.Group{Inj: count}
	persisted := 0
	opts := Options{OnCheckpoint: func(c Checkpoint) {
		if c.Kind == WindowPersisted {
			persisted++
		}
	}}
	if _, err := runMerge(t, img, g.Wrap(cf), g.Wrap(bf), &opts); err != nil {
		t.Fatal(err)
	}
	if persisted != 1 {
		t.Fatalf("%d windows persisted, want the one window", persisted)
	}
	total := count.syncs.Load()
	for k := int64(0); k <= total; k++ {
		for _, ss := range survivorSets {
			powerCut(t, img, Options{}, k, total, ss.cowKeep, ss.bKeep, fmt.Sprintf("cut at sync %d/%d, survivors (COW/base) %s", k, total, ss.name))
		}
	}
}
