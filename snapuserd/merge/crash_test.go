package merge

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"math/rand/v2"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
)

var powerLossSeeds = flag.Int("merge.powerloss-seeds", 0, "seeds per variant of TestPowerLoss (0 = default; raise for a soak)")

var crashVariants = []struct {
	name string
	gen  genConfig
	opts Options
}{
	{"v2", genConfig{seed: 101, blocks: 1400, version: 2, scratch: true}, Options{WindowBlocks: 150, replaceCommitBlocks: 64}},
	{"v3", genConfig{seed: 102, blocks: 1400, version: 3, scratch: true}, Options{WindowBlocks: 150, MergeSize: 16, replaceCommitBlocks: 64}},
	{"v3-aosp-window", genConfig{seed: 103, blocks: 1400, version: 3, scratch: true}, Options{}},
	{"v2-no-scratch", genConfig{seed: 104, blocks: 500, version: 2}, Options{replaceCommitBlocks: 64}},
	{"v3-real-lz4", genConfig{seed: 105, blocks: 1400, version: 3, scratch: true, real: true, comp: cow.CompressionLz4}, Options{WindowBlocks: 150, replaceCommitBlocks: 64}},
	{"v2-real-gz-aosp-window", genConfig{seed: 106, blocks: 1400, version: 2, scratch: true, real: true, comp: cow.CompressionGz}, Options{}},
	// A separate source device (<part>-src) and a base that differs from it.
	{"v3-real-lz4-backing", genConfig{seed: 107, blocks: 1400, version: 3, scratch: true, real: true, comp: cow.CompressionLz4, backing: true}, Options{WindowBlocks: 150, replaceCommitBlocks: 64}},
	{"v2-no-scratch-backing", genConfig{seed: 108, blocks: 500, version: 2, backing: true}, Options{replaceCommitBlocks: 64}},
	// Overlap-free moves between the shift chains: some windows need no
	// scratch copy.
	{"v2-moves", genConfig{seed: 109, blocks: 1400, version: 2, scratch: true, moves: true}, Options{WindowBlocks: 60, replaceCommitBlocks: 64}},
}

// withBacking returns opts with a fresh source device of img (wrapped by
// wrap, if set) and that device, for checking it was never written.
func withBacking(img *image, opts Options, wrap func(faultfs.File) faultfs.File) (Options, *faultfs.MemFile) {
	bk := img.backingFile()
	if bk == nil {
		return opts, nil
	}
	m := bk.(*faultfs.MemFile)
	opts.Backing = bk
	if wrap != nil {
		opts.Backing = wrap(bk)
	}
	return opts, m
}

// checkBacking fails if the source device is not the old image any more or
// saw a write.
func checkBacking(t testing.TB, img *image, m *faultfs.MemFile) {
	t.Helper()
	if m == nil {
		return
	}
	if m.Unsynced() != 0 || !bytes.Equal(m.Bytes(), img.backing) {
		t.Fatal("the merge wrote the source device")
	}
}

// TestFaultInjection fails the n-th file call for n = 0, 1, 2, … until a run
// succeeds (pebble's TestErrors). Every failure must be the injected one; the
// state left behind must pass Check and satisfy AOSP's recovery rule, and a
// new engine must finish the merge to the exact target.
func TestFaultInjection(t *testing.T) {
	for _, v := range crashVariants {
		t.Run(v.name, func(t *testing.T) {
			// Every call is a failure point: keep the image small, with
			// several windows.
			v.gen.blocks = 450
			switch {
			case !v.gen.scratch:
				v.gen.blocks = 300 // windows end at every overlap: many calls
			case v.opts.WindowBlocks == 0 || v.name == "v3":
				t.Skip("same engine paths as another variant here; covered by TestPowerLoss")
			}
			img := generate(t, v.gen)
			t.Logf("%d ops, %d ordered", len(img.order), img.nOrd)
			for n := int64(0); ; n++ {
				cf, bf := img.files()
				c := &faultfs.Counter{Inner: faultfs.OnIndex(n)}
				g := &faultfs.Group{Inj: c}
				opts, bk := withBacking(img, v.opts, g.Wrap)
				e, err := New(g.Wrap(cf), g.Wrap(bf), img.source, &opts)
				if err == nil {
					err = e.Run(context.Background())
					if err != nil && e.Progress().Status != StatusMergeFailed {
						t.Fatalf("n=%d: status after failure %q", n, e.Progress().Status)
					}
				}
				checkBacking(t, img, bk)
				if c.Injected() == 0 {
					if err != nil {
						t.Fatalf("n=%d: uninjected run failed: %v", n, err)
					}
					if d := diffBlocks(bf.Bytes(), img.target); d != "" {
						t.Fatalf("clean run: %s", d)
					}
					t.Logf("covered %d failure points", n)
					return
				}
				if !errors.Is(err, faultfs.ErrInjected) {
					t.Fatalf("n=%d: error %v is not the injected one", n, err)
				}
				// The process died here; page cache content survives.
				if _, err := Check(cf, int64(len(img.cowImg)), "test.cow", img.source); err != nil {
					t.Fatalf("n=%d: Check: %v", n, err)
				}
				if got := img.resume(t, cf.Bytes(), bf.Bytes()); !bytes.Equal(got, img.target) {
					t.Fatalf("n=%d: AOSP recovery from this state: %s", n, diffBlocks(got, img.target))
				}
				opts, bk = withBacking(img, v.opts, nil)
				if _, err := runMerge(t, img, cf, bf, &opts); err != nil {
					t.Fatalf("n=%d: resume: %v", n, err)
				}
				checkBacking(t, img, bk)
				if d := diffBlocks(bf.Bytes(), img.target); d != "" {
					t.Fatalf("n=%d: after resume: %s", n, d)
				}
			}
		})
	}
}

// TestPowerLoss cuts power at a random call (seeded), keeping the durable
// data plus a random half of the unsynced writes (for odd seeds, of their
// 4 KiB pages), up to three times per seed, and requires the merge to finish
// to the exact target.
func TestPowerLoss(t *testing.T) {
	for _, v := range crashVariants {
		t.Run(v.name, func(t *testing.T) {
			// TestPowerCutAtEverySync covers every sync deterministically;
			// this adds random crash points and torn pages: 20 seeds on
			// the real COWs and without scratch, fewer on the in-memory
			// fakes (same engine paths).
			seeds := 20
			if !v.gen.real && v.gen.scratch {
				seeds = 8
			}
			if testing.Short() {
				seeds = 10
			}
			if *powerLossSeeds > 0 {
				seeds = *powerLossSeeds
			}
			img := generate(t, v.gen)
			// Count the calls of a clean run to pick crash points.
			cf, bf := img.files()
			c := &faultfs.Counter{}
			g := &faultfs.Group{Inj: c}
			opts, _ := withBacking(img, v.opts, g.Wrap)
			if _, err := runMerge(t, img, g.Wrap(cf), g.Wrap(bf), &opts); err != nil {
				t.Fatal(err)
			}
			total := c.Calls()
			crashes := 0
			for seed := 0; seed < seeds; seed++ {
				rng := rand.New(rand.NewPCG(uint64(seed), 7))
				cf, bf := img.files()
				for round := 0; ; round++ {
					var inj faultfs.Injector
					if round < 3 {
						inj = faultfs.FromIndex(rng.Int64N(total))
					}
					g := &faultfs.Group{Inj: inj}
					opts, bk := withBacking(img, v.opts, g.Wrap)
					e, err := New(g.Wrap(cf), g.Wrap(bf), img.source, &opts)
					if err == nil {
						err = e.Run(context.Background())
					}
					checkBacking(t, img, bk)
					if err == nil {
						break
					}
					if !errors.Is(err, faultfs.ErrInjected) {
						t.Fatalf("seed %d round %d: %v", seed, round, err)
					}
					crashes++
					cfg := faultfs.CrashCloneConfig{UnsyncedDataPercent: 50, RNG: rng}
					if seed%2 == 1 {
						cfg.PageSize = 4096 // writes torn into independent pages
					}
					cf, bf = cf.CrashClone(cfg), bf.CrashClone(cfg)
					checkMem(t, img, cf)
					if got := img.resume(t, cf.Bytes(), bf.Bytes()); !bytes.Equal(got, img.target) {
						t.Fatalf("seed %d round %d: AOSP recovery after power loss: %s", seed, round, diffBlocks(got, img.target))
					}
				}
				if d := diffBlocks(bf.Bytes(), img.target); d != "" {
					t.Fatalf("seed %d: %s", seed, d)
				}
			}
			t.Logf("%d seeds, %d power cuts over %d calls per clean run", seeds, crashes, total)
		})
	}
}

// TestInteropCheckpoints asserts, at every durable state change, the exact
// header and scratch bytes AOSP's recovery rule expects, and that a crash
// right there (durable data only) recovers to the target.
func TestInteropCheckpoints(t *testing.T) {
	for _, v := range crashVariants {
		t.Run(v.name, func(t *testing.T) {
			img := generate(t, v.gen)
			cf, bf := img.files()
			hs := int(binary.LittleEndian.Uint16(img.cowImg[12:]))
			var seen [4]int
			lastMerged := uint64(0)
			persisted := map[uint64]int{}
			var windows []Checkpoint
			opts, bk := withBacking(img, v.opts, nil)
			opts.OnCheckpoint = func(c Checkpoint) {
				seen[c.Kind]++
				p := cf.Bytes()
				nmo := binary.LittleEndian.Uint64(p[cow.OffsetNumMergeOps:])
				if nmo != c.NumMergeOps {
					t.Fatalf("%v: num_merge_ops on disk %d, checkpoint says %d", c.Kind, nmo, c.NumMergeOps)
				}
				// Everything but num_merge_ops in the header is unchanged.
				want := append([]byte(nil), img.cowImg[:hs]...)
				binary.LittleEndian.PutUint64(want[cow.OffsetNumMergeOps:], nmo)
				if !bytes.Equal(p[:hs], want) {
					t.Fatalf("%v: header bytes changed beyond num_merge_ops", c.Kind)
				}
				switch c.Kind {
				case WindowPersisted:
					persisted[c.Start] = c.Ops
					if nmo != lastMerged || c.Start != nmo {
						t.Fatalf("persisted window at %d, num_merge_ops %d, last commit %d", c.Start, nmo, lastMerged)
					}
					if p[hs] != cow.ReadAheadDone {
						t.Fatalf("persisted window: read_ahead_state %d", p[hs])
					}
					dataOff := hs + 8192
					for k := 0; k <= c.Ops; k++ {
						en := cow.DecodeScratchEntry(p[hs+1+16*k:])
						if k == c.Ops {
							if en != (cow.ScratchEntry{}) {
								t.Fatalf("no terminator after %d entries", c.Ops)
							}
							break
						}
						op := img.order[int(nmo)+k]
						if en.NewBlock != op.NewBlock || en.FileOffset != uint64(dataOff+k*bs) {
							t.Fatalf("entry %d = %+v, want {%d %#x}", k, en, op.NewBlock, dataOff+k*bs)
						}
						if !bytes.Equal(p[en.FileOffset:en.FileOffset+bs], img.target[op.NewBlock*bs:(op.NewBlock+1)*bs]) {
							t.Fatalf("scratch data of entry %d is not the target block", k)
						}
					}
					if v.opts.WindowBlocks == 0 && c.Ops != min(510, img.nOrd-int(nmo)) {
						t.Fatalf("AOSP window of %d ops at %d", c.Ops, nmo)
					}
				case WindowCommitted, ReplaceCommitted:
					if c.Kind == WindowCommitted {
						windows = append(windows, c)
					}
					if v.gen.scratch && p[hs] != cow.ReadAheadInProgress {
						t.Fatalf("%v: read_ahead_state %d", c.Kind, p[hs])
					}
					if nmo != lastMerged+uint64(c.Ops) {
						t.Fatalf("%v: num_merge_ops %d after %d + %d", c.Kind, nmo, lastMerged, c.Ops)
					}
					b := bf.Bytes()
					for i := 0; i < int(nmo); i++ {
						op := img.order[i]
						lo, hi := op.NewBlock*bs, (op.NewBlock+op.Blocks())*bs
						if !bytes.Equal(b[lo:hi], img.target[lo:hi]) {
							t.Fatalf("%v: merged op %d not in base", c.Kind, i)
						}
					}
					lastMerged = nmo
				}
				if bf.Unsynced() != 0 {
					t.Fatalf("%v: base has unsynced writes at a checkpoint", c.Kind)
				}
				st := checkMem(t, img, cf)
				if v.gen.scratch && v.opts.WindowBlocks == 0 && !st.WindowBoundary {
					t.Fatalf("num_merge_ops %d not at an AOSP window boundary", nmo)
				}
				crash := func(m *faultfs.MemFile) []byte { return m.CrashClone(faultfs.CrashCloneConfig{}).Bytes() }
				if got := img.resume(t, crash(cf), crash(bf)); !bytes.Equal(got, img.target) {
					t.Fatalf("%v at %d: AOSP recovery: %s", c.Kind, nmo, diffBlocks(got, img.target))
				}
			}
			e, err := runMerge(t, img, cf, bf, &opts)
			if err != nil {
				t.Fatal(err)
			}
			checkBacking(t, img, bk)
			t.Logf("checkpoints: %d persisted, %d window commits, %d replace commits", seen[WindowPersisted], seen[WindowCommitted], seen[ReplaceCommitted])
			// With scratch, exactly the windows that overwrite their own
			// sources went through the scratch region first.
			skipped := 0
			for _, c := range windows {
				need := e.needsScratch(&window{start: int(c.Start), n: c.Ops})
				n, ok := persisted[c.Start]
				switch {
				case !v.gen.scratch && ok:
					t.Fatalf("window at %d persisted without a scratch region", c.Start)
				case v.gen.scratch && need && (!ok || n != c.Ops):
					t.Fatalf("window at %d (%d ops) overwrites its own sources and was committed without being persisted", c.Start, c.Ops)
				case v.gen.scratch && !need && ok:
					t.Fatalf("window at %d (%d ops) was persisted though it never overwrites its own sources", c.Start, c.Ops)
				case v.gen.scratch && !need:
					skipped++
				}
			}
			if v.gen.moves && (skipped == 0 || seen[WindowPersisted] == 0) {
				t.Fatalf("moves: %d windows merged without scratch, %d persisted; want both", skipped, seen[WindowPersisted])
			}
		})
	}
}

// TestReplayForeignWindowSize: a scratch window persisted with AOSP's 510-op
// window is replayed as is by an engine configured with smaller windows.
func TestReplayForeignWindowSize(t *testing.T) {
	img := generate(t, genConfig{seed: 111, blocks: 2000, version: 3, scratch: true})
	cf, bf := img.files()
	var cowAt, baseAt []byte
	opts := &Options{OnCheckpoint: func(c Checkpoint) {
		if c.Kind == WindowPersisted && c.Start == 510 {
			cowAt, baseAt = cf.Bytes(), bf.Bytes()
		}
	}}
	if _, err := runMerge(t, img, cf, bf, opts); err != nil {
		t.Fatal(err)
	}
	cf, bf = faultfs.NewMemFile("c", cowAt), faultfs.NewMemFile("b", baseAt)
	e, err := New(cf, bf, img.source, &Options{WindowBlocks: 37})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := diffBlocks(bf.Bytes(), img.target); d != "" {
		t.Fatal(d)
	}
}
