package merge

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
)

func runMerge(t testing.TB, img *image, cf, bf faultfs.File, opts *Options) (*Engine, error) {
	t.Helper()
	e, err := New(cf, bf, img.source, opts)
	if err != nil {
		return nil, err
	}
	return e, e.Run(context.Background())
}

func checkMem(t testing.TB, img *image, cf *faultfs.MemFile) *State {
	t.Helper()
	b := cf.Bytes()
	st, err := Check(bytes.NewReader(b), int64(len(b)), "test.cow", img.source)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return st
}

func TestMerge(t *testing.T) {
	tests := []struct {
		name string
		gen  genConfig
		opts Options
	}{
		{"v2", genConfig{seed: 1, blocks: 3000, version: 2, scratch: true}, Options{}},
		{"v3", genConfig{seed: 2, blocks: 3000, version: 3, scratch: true}, Options{}},
		{"v2-no-scratch", genConfig{seed: 3, blocks: 3000, version: 2}, Options{}},
		{"v3-no-scratch", genConfig{seed: 4, blocks: 3000, version: 3}, Options{}},
		{"v3-merge-size-4", genConfig{seed: 5, blocks: 3000, version: 3, scratch: true}, Options{MergeSize: 4}},
		{"v2-window-37", genConfig{seed: 6, blocks: 3000, version: 2, scratch: true}, Options{WindowBlocks: 37}},
		{"v3-nice", genConfig{seed: 7, blocks: 1000, version: 3, scratch: true}, Options{Nice: BackgroundNice}},
		{"v2-real-gz", genConfig{seed: 8, blocks: 3000, version: 2, scratch: true, real: true, comp: cow.CompressionGz}, Options{}},
		{"v2-real-none", genConfig{seed: 9, blocks: 3000, version: 2, scratch: true, real: true}, Options{}},
		{"v3-real-lz4-64k", genConfig{seed: 10, blocks: 3000, version: 3, scratch: true, real: true, comp: cow.CompressionLz4}, Options{}},
		{"v3-real-zstd-no-scratch", genConfig{seed: 11, blocks: 3000, version: 3, real: true, comp: cow.CompressionZstd}, Options{}},
		// The default Replace commit interval (8 MiB: only the final
		// commit here); the other cases commit every 256 blocks.
		{"v2-default-replace-commit", genConfig{seed: 12, blocks: 3000, version: 2, scratch: true}, Options{replaceCommitBlocks: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := generate(t, tc.gen)
			cf, bf := img.files()
			var commits []Checkpoint
			opts := tc.opts
			if opts.replaceCommitBlocks == 0 {
				opts.replaceCommitBlocks = 256
			}
			commitBlocks := uint64(opts.replaceCommitBlocks)
			if opts.replaceCommitBlocks < 0 {
				commitBlocks = ReplaceCommitBlocks
			}
			var niceErr error
			opts.OnCheckpoint = func(c Checkpoint) {
				commits = append(commits, c)
				if tc.opts.Nice != 0 && niceErr == nil && runtime.GOOS == "linux" {
					// The hook runs on the merge thread.
					if got, err := threadNice(); err != nil || got != tc.opts.Nice {
						niceErr = fmt.Errorf("merge thread nice = %d, %v; want %d", got, err, tc.opts.Nice)
					}
				}
			}
			e, err := New(cf, bf, img.source, &opts)
			if err != nil {
				t.Fatal(err)
			}
			if s := e.Status(); s != StatusSnapshot {
				t.Fatalf("status before Run = %q", s)
			}
			if err := e.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			if d := diffBlocks(bf.Bytes(), img.target); d != "" {
				t.Fatalf("base != target: %s", d)
			}
			if niceErr != nil {
				t.Fatal(niceErr)
			}
			if n, err := threadNice(); err == nil && tc.opts.Nice != 0 && n == tc.opts.Nice {
				t.Fatal("the test goroutine's thread got the merge thread's priority")
			}
			p := e.Progress()
			if p.Status != StatusMergeComplete || p.Percent != 100 || p.NumMergeOps != uint64(len(img.order)) {
				t.Fatalf("progress after merge = %+v", p)
			}
			st := checkMem(t, img, cf)
			if !st.Complete || (tc.gen.scratch && st.ReadAheadState != cow.ReadAheadInProgress) {
				t.Fatalf("state after merge = %+v", st)
			}
			if cf.Unsynced() != 0 || bf.Unsynced() != 0 {
				t.Fatalf("writes left unsynced after Run: cow %d, base %d", cf.Unsynced(), bf.Unsynced())
			}
			// The COW outside header and scratch is untouched.
			if got := cf.Bytes(); !bytes.Equal(got[len(got)-4096:], img.cowImg[len(got)-4096:]) {
				t.Fatal("merge wrote past the scratch region")
			}
			var windows, replaces int
			for _, c := range commits {
				switch c.Kind {
				case WindowCommitted:
					windows++
					if c.Ops > max(tc.opts.WindowBlocks, 0) && tc.opts.WindowBlocks > 0 || c.Ops > 510 {
						t.Fatalf("window of %d ops", c.Ops)
					}
				case ReplaceCommitted:
					replaces++
					var blocks uint64
					for _, op := range img.order[c.Start:c.NumMergeOps] {
						blocks += op.Blocks()
					}
					if c.NumMergeOps != uint64(len(img.order)) && blocks < commitBlocks {
						t.Fatalf("replace commit of only %d blocks before the end: %+v", blocks, c)
					}
				}
			}
			t.Logf("%d ordered ops in %d windows, %d replace commits", img.nOrd, windows, replaces)
			if windows == 0 || replaces == 0 {
				t.Fatal("no windows or replace commits")
			}
			// A new engine on the merged COW is complete at once.
			e2, err := New(cf, bf, img.source, nil)
			if err != nil {
				t.Fatal(err)
			}
			if s := e2.Status(); s != StatusMergeComplete {
				t.Fatalf("status of a merged COW before Run = %q", s)
			}
			if err := e2.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestReadBlockDuringMerge has readers hammer random blocks while the merge
// runs (with pauses) and requires every read to return target bytes.
func TestReadBlockDuringMerge(t *testing.T) {
	for _, tc := range []genConfig{
		{seed: 11, blocks: 2500, version: 3, scratch: true},
		{seed: 12, blocks: 1200, version: 2},
	} {
		t.Run(map[bool]string{true: "scratch", false: "no-scratch"}[tc.scratch], func(t *testing.T) {
			img := generate(t, tc)
			cf, bf := img.files()
			var e *Engine
			var reads atomic.Int64
			check := func(rng *rand.Rand) error {
				if rng.IntN(4) == 0 { // an unaligned ReadAt spanning blocks
					off := rng.Int64N(int64(len(img.target)))
					p := make([]byte, min(1+rng.IntN(3*bs), len(img.target)-int(off)))
					if n, err := e.ReadAt(p, off); err != nil || n != len(p) {
						return fmt.Errorf("ReadAt(%d, %d) = %d, %v", len(p), off, n, err)
					}
					reads.Add(1)
					if !bytes.Equal(p, img.target[off:off+int64(len(p))]) {
						return fmt.Errorf("stale ReadAt of %d bytes at %d during %v", len(p), off, e.Progress().Phase)
					}
					return nil
				}
				b := uint64(rng.IntN(tc.blocks))
				p := make([]byte, bs)
				if err := e.ReadBlock(b, p); err != nil {
					return err
				}
				reads.Add(1)
				if !bytes.Equal(p, img.target[b*bs:(b+1)*bs]) {
					return errors.New("stale read of block " + itoa(b) + " at " + e.Progress().Phase.String())
				}
				return nil
			}
			ncp := 0
			opts := &Options{WindowBlocks: 100, OnCheckpoint: func(c Checkpoint) {
				// Give readers a chance at the states in between.
				if ncp++; ncp%4 == 0 {
					time.Sleep(200 * time.Microsecond)
				}
			}}
			var err error
			e, err = New(cf, bf, img.source, opts)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			errc := make(chan error, 4)
			for r := 0; r < 2; r++ {
				wg.Add(1)
				go func(seed uint64) {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(seed, 1))
					for ctx.Err() == nil {
						if err := check(rng); err != nil {
							errc <- err
							cancel()
							return
						}
					}
				}(uint64(r))
			}
			e.Pause()
			done := make(chan error, 1)
			go func() { done <- e.Run(context.Background()) }()
			for !e.Progress().Parked {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(5 * time.Millisecond)
			if p := e.Progress(); p.NumMergeOps != 0 || p.Status != StatusMerge {
				t.Fatalf("paused merge progressed: %+v", p)
			}
			if _, st, ok := e.BlockState(img.order[0].NewBlock); !ok || st != WindowPending {
				t.Fatalf("first ordered block before the merge: %v %v", st, ok)
			}
			e.Resume()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if w, st, ok := e.BlockState(img.order[img.nOrd-1].NewBlock); !ok || st != WindowCompleted || w != e.Progress().Windows-1 {
				t.Fatalf("last ordered block after the merge: window %d %v %v", w, st, ok)
			}
			if _, _, ok := e.BlockState(img.order[img.nOrd].NewBlock); ok {
				t.Fatal("a Replace block has a window state")
			}
			time.Sleep(5 * time.Millisecond)
			cancel()
			wg.Wait()
			select {
			case err := <-errc:
				t.Fatal(err)
			default:
			}
			if d := diffBlocks(bf.Bytes(), img.target); d != "" {
				t.Fatalf("base != target: %s", d)
			}
			t.Logf("%d concurrent reads matched the target", reads.Load())
		})
	}
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

func TestCancelAndResume(t *testing.T) {
	img := generate(t, genConfig{seed: 21, blocks: 3000, version: 3, scratch: true})
	cf, bf := img.files()
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	opts := &Options{OnCheckpoint: func(c Checkpoint) {
		if n++; n == 2 { // after the first window's commit
			cancel()
		}
	}}
	e, err := New(cf, bf, img.source, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel = %v", err)
	}
	p := e.Progress()
	if p.Status != StatusSnapshot || p.NumMergeOps == 0 || p.NumMergeOps >= p.TotalOps {
		t.Fatalf("progress after cancel = %+v", p)
	}
	if err := e.Run(context.Background()); err == nil {
		t.Fatal("second Run on one engine succeeded")
	}
	if _, err := runMerge(t, img, cf, bf, nil); err != nil {
		t.Fatal(err)
	}
	if d := diffBlocks(bf.Bytes(), img.target); d != "" {
		t.Fatalf("base != target: %s", d)
	}
}

func TestLimiter(t *testing.T) {
	l := NewLimiter(1)
	img := generate(t, genConfig{seed: 31, blocks: 800, version: 2, scratch: true})
	cf1, bf1 := img.files()
	cf2, bf2 := img.files()
	e1, err := New(cf1, bf1, img.source, &Options{Limiter: l})
	if err != nil {
		t.Fatal(err)
	}
	e2, err := New(cf2, bf2, img.source, &Options{Limiter: l})
	if err != nil {
		t.Fatal(err)
	}
	e1.Pause()
	d1, d2 := make(chan error, 1), make(chan error, 1)
	go func() { d1 <- e1.Run(context.Background()) }()
	for !e1.Progress().Parked {
		time.Sleep(time.Millisecond)
	}
	go func() { d2 <- e2.Run(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	if p := e2.Progress(); p.Phase != PhaseQueued || p.Status != StatusMerge {
		t.Fatalf("second merge not queued: %+v", p)
	}
	e1.Resume()
	if err := <-d1; err != nil {
		t.Fatal(err)
	}
	if err := <-d2; err != nil {
		t.Fatal(err)
	}
	for _, bf := range []*faultfs.MemFile{bf1, bf2} {
		if d := diffBlocks(bf.Bytes(), img.target); d != "" {
			t.Fatal(d)
		}
	}
}

// corrupt writes bytes into a copy of the merged-to-window-1 state.
func TestCorruptState(t *testing.T) {
	img := generate(t, genConfig{seed: 41, blocks: 2000, version: 2, scratch: true})
	// Snapshot the COW when window 0 is persisted (state 2) but not merged.
	cf, bf := img.files()
	var state2 []byte
	opts := &Options{OnCheckpoint: func(c Checkpoint) {
		if c.Kind == WindowPersisted && state2 == nil {
			state2 = cf.Bytes()
		}
	}}
	if _, err := runMerge(t, img, cf, bf, opts); err != nil {
		t.Fatal(err)
	}
	hs := cow.HeaderV2Size
	put64 := func(p []byte, off int, v uint64) { binary.LittleEndian.PutUint64(p[off:], v) }
	tests := []struct {
		name string
		mod  func(p []byte)
	}{
		{"state byte 7", func(p []byte) { p[hs] = 7 }},
		{"num_merge_ops past the end", func(p []byte) { put64(p, cow.OffsetNumMergeOps, 1<<40) }},
		{"state 2 without entries", func(p []byte) { clear(p[hs+1 : hs+1+32]) }},
		{"state 2 wrong new_block", func(p []byte) { put64(p, hs+1+16*5, 999999) }},
		{"state 2 offset outside data", func(p []byte) { put64(p, hs+1+16*3+8, 12) }},
		{"state 2 offsets overlap", func(p []byte) { put64(p, hs+1+16*3+8, uint64(hs+8192+4096*2+1)) }},
		{"state 2 duplicate offset", func(p []byte) { put64(p, hs+1+16*3+8, uint64(hs+8192)) }},
		{"state 2 offset in the entry list", func(p []byte) { put64(p, hs+1+16*3+8, uint64(hs+1+16*100)) }},
		{"state 2 offset past the region", func(p []byte) { put64(p, hs+1+16*3+8, uint64(hs+cow.BufferRegionDefaultSize-100)) }},
		{"state 2 past ordered ops", func(p []byte) { put64(p, cow.OffsetNumMergeOps, uint64(img.nOrd)) }},
		{"state 2 no terminator", func(p []byte) {
			for k := 0; k < 512; k++ {
				put64(p, hs+1+16*k, uint64(k+1))
				put64(p, hs+1+16*k+8, uint64(hs+8192))
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := append([]byte(nil), state2...)
			tc.mod(p)
			if _, err := Check(bytes.NewReader(p), int64(len(p)), "x.cow", img.source); !errors.Is(err, ErrCorrupt) && !errors.Is(err, cow.ErrCorrupt) {
				t.Fatalf("Check = %v, want ErrCorrupt", err)
			}
			_, err := New(faultfs.NewMemFile("x.cow", p), faultfs.NewMemFile("b", img.base), img.source, nil)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("New = %v, want ErrCorrupt", err)
			}
			t.Log(err)
		})
	}
	// The unmodified state-2 image is valid and resumes correctly.
	st, err := Check(bytes.NewReader(state2), int64(len(state2)), "x.cow", img.source)
	if err != nil || st.ReadAheadState != 2 || len(st.Entries) != 510 {
		t.Fatalf("Check(state 2) = %+v, %v", st, err)
	}
	t.Log(st.NextAction())
}

func TestBadOrder(t *testing.T) {
	img := generate(t, genConfig{seed: 51, blocks: 600, version: 3, scratch: true})
	nb := uint64(len(img.base) / bs)
	tests := []struct {
		name  string
		order []cow.Op
	}{
		{"copy after replace", []cow.Op{{Type: cow.OpReplace, NewBlock: 1, DataLength: bs}, {Type: cow.OpCopy, NewBlock: 2, Source: 3}}},
		{"dest past end", []cow.Op{{Type: cow.OpZero, NewBlock: nb}}},
		{"multi-block past end", []cow.Op{{Type: cow.OpReplace, NewBlock: nb - 1, FactorShift: 1}}},
		{"copy source past end", []cow.Op{{Type: cow.OpCopy, NewBlock: 1, Source: nb}}},
		{"xor source past end", []cow.Op{{Type: cow.OpXor, NewBlock: 1, Source: nb*bs - 100}}},
		{"label in order", []cow.Op{{Type: cow.OpLabel, Source: 1}}},
		{"copy reads an earlier destination", []cow.Op{{Type: cow.OpCopy, NewBlock: 3, Source: 1}, {Type: cow.OpCopy, NewBlock: 4, Source: 3}}},
		{"xor reads an earlier destination", []cow.Op{{Type: cow.OpCopy, NewBlock: 3, Source: 1}, {Type: cow.OpXor, NewBlock: 9, Source: 2*bs + 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &fakeSource{order: tc.order, payload: img.src.payload}
			_, err := New(faultfs.NewMemFile("x.cow", img.cowImg), faultfs.NewMemFile("b", img.base), src, nil)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("New = %v, want ErrCorrupt", err)
			}
			t.Log(err)
		})
	}
}

func TestOverallPercent(t *testing.T) {
	tests := []struct {
		ps   []Progress
		want float64
	}{
		{nil, 0},
		{[]Progress{{Phase: PhaseComplete}, {Phase: PhaseOrdered, Percent: 50}}, 75},
		{[]Progress{{Phase: PhaseComplete}, {Phase: PhaseIdle, Percent: 10}, {Phase: PhaseQueued}}, 50},
		{[]Progress{{Phase: PhaseFailed, Percent: 30}}, 0},
	}
	for i, tc := range tests {
		if got := OverallPercent(tc.ps); got != tc.want {
			t.Errorf("case %d: %v, want %v", i, got, tc.want)
		}
	}
}

// TestFailedWindow: after an I/O error in a window, reads of that window
// fail (FAILED), other blocks still read the target, status is failed, and
// a new engine finishes the merge.
func TestFailedWindow(t *testing.T) {
	img := generate(t, genConfig{seed: 61, blocks: 2000, version: 3, scratch: true})
	cf, bf := img.files()
	writes := 0
	inj := faultfs.InjectorFunc(func(op faultfs.Op) error {
		if op.Path == "base.img" && op.Kind == faultfs.OpWrite {
			if writes++; writes == 3 {
				return &faultfs.InjectedError{Op: op}
			}
		}
		return nil
	})
	g := &faultfs.Group{Inj: inj}
	e, err := New(g.Wrap(cf), g.Wrap(bf), img.source, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Run(context.Background()); !errors.Is(err, faultfs.ErrInjected) {
		t.Fatalf("Run = %v", err)
	}
	p := e.Progress()
	if p.Status != StatusMergeFailed || !errors.Is(p.Err, faultfs.ErrInjected) {
		t.Fatalf("progress = %+v", p)
	}
	buf := make([]byte, bs)
	if err := e.ReadBlock(img.order[0].NewBlock, buf); !errors.Is(err, ErrFailed) {
		t.Fatalf("read of the failed window: %v", err)
	}
	for _, i := range []int{600, img.nOrd + 5} { // a pending window, a Replace
		b := img.order[i].NewBlock
		if err := e.ReadBlock(b, buf); err != nil || !bytes.Equal(buf, img.target[b*bs:(b+1)*bs]) {
			t.Fatalf("read of block %d (op %d) after the failure: %v", b, i, err)
		}
	}
	if _, err := runMerge(t, img, cf, bf, nil); err != nil {
		t.Fatal(err)
	}
	if d := diffBlocks(bf.Bytes(), img.target); d != "" {
		t.Fatal(d)
	}
}

func TestReadAtBounds(t *testing.T) {
	img := generate(t, genConfig{seed: 71, blocks: 300, version: 2, scratch: true})
	cf, bf := img.files()
	e, err := New(cf, bf, img.source, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.Size() != int64(len(img.target)) {
		t.Fatalf("Size = %d", e.Size())
	}
	p := make([]byte, 100)
	if n, err := e.ReadAt(p, e.Size()-40); err != io.EOF || n != 40 || !bytes.Equal(p[:40], img.target[len(img.target)-40:]) {
		t.Fatalf("ReadAt across the end = %d, %v", n, err)
	}
	if _, err := e.ReadAt(p, -1); err == nil {
		t.Fatal("ReadAt at -1 succeeded")
	}
	if err := e.ReadBlock(300, make([]byte, bs)); err == nil {
		t.Fatal("ReadBlock past the end succeeded")
	}
	if err := e.ReadBlock(0, make([]byte, 10)); err == nil {
		t.Fatal("ReadBlock with a short buffer succeeded")
	}
	if m, tot, failed := e.MergeProgress(); m != 0 || tot != uint64(len(img.order)) || failed {
		t.Fatalf("MergeProgress = %d %d %v", m, tot, failed)
	}
}

func TestCancelWhilePaused(t *testing.T) {
	img := generate(t, genConfig{seed: 91, blocks: 800, version: 3, scratch: true})
	cf, bf := img.files()
	e, err := New(cf, bf, img.source, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Pause()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	for !e.Progress().Parked {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a paused merge ignored cancellation")
	}
	if p := e.Progress(); p.Status != StatusSnapshot || p.NumMergeOps != 0 {
		t.Fatalf("progress = %+v", p)
	}
}

// TestFailedReplacePhase: an I/O error in the Replace phase leaves every
// committed window readable.
func TestFailedReplacePhase(t *testing.T) {
	img := generate(t, genConfig{seed: 62, blocks: 2000, version: 2, scratch: true})
	cf, bf := img.files()
	inReplace := false
	inj := faultfs.InjectorFunc(func(op faultfs.Op) error {
		if inReplace && op.Path == "base.img" && op.Kind == faultfs.OpWrite {
			return &faultfs.InjectedError{Op: op}
		}
		return nil
	})
	g := &faultfs.Group{Inj: inj}
	windows := 0
	e, err := New(g.Wrap(cf), g.Wrap(bf), img.source, &Options{OnCheckpoint: func(c Checkpoint) {
		if c.Kind == WindowCommitted {
			if windows++; uint64(img.nOrd) == c.NumMergeOps {
				inReplace = true
			}
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Run(context.Background()); !errors.Is(err, faultfs.ErrInjected) || !inReplace {
		t.Fatalf("Run = %v (replace phase reached: %v)", err, inReplace)
	}
	buf := make([]byte, bs)
	for _, i := range []int{0, img.nOrd - 1, img.nOrd + 1} {
		b := img.order[i].NewBlock
		if err := e.ReadBlock(b, buf); err != nil || !bytes.Equal(buf, img.target[b*bs:(b+1)*bs]) {
			t.Fatalf("read of block %d (op %d) after a Replace-phase failure: %v", b, i, err)
		}
	}
}

// TestStateByteWithoutOrderedOps: like AOSP's CommitMerge, a run without
// unmerged ordered ops (no read-ahead thread) leaves read_ahead_state as it
// found it: 0 for a COW without ordered ops, 1 when resuming in the Replace
// phase.
func TestStateByteWithoutOrderedOps(t *testing.T) {
	img := generate(t, genConfig{seed: 95, blocks: 1200, version: 3, scratch: true})
	hs := cow.HeaderV3Size
	// Only the Replace/Zero ops: state stays 0.
	src := &fakeSource{order: img.src.order[img.nOrd:], payload: img.src.payload}
	cf := faultfs.NewMemFile("c", img.cowImg)
	bf := faultfs.NewMemFile("b", img.base)
	e, err := New(cf, bf, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := cf.Bytes(); p[hs] != 0 || binary.LittleEndian.Uint64(p[cow.OffsetNumMergeOps:]) != uint64(len(src.order)) {
		t.Fatalf("no ordered ops: state %d", p[hs])
	}
	// Full merge, stopped right after the ordered phase, resumed: the
	// resumed run (no read-ahead) keeps state 1 and the merge completes.
	cf, bf = img.files()
	ctx, cancel := context.WithCancel(context.Background())
	opts := &Options{OnCheckpoint: func(c Checkpoint) {
		if c.Kind == WindowCommitted && c.NumMergeOps == uint64(img.nOrd) {
			cancel()
		}
	}}
	e, err = New(cf, bf, img.source, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if p := cf.Bytes(); p[hs] != cow.ReadAheadInProgress {
		t.Fatalf("after the ordered phase: state %d", p[hs])
	}
	if _, err := runMerge(t, img, cf, bf, nil); err != nil {
		t.Fatal(err)
	}
	if p := cf.Bytes(); p[hs] != cow.ReadAheadInProgress {
		t.Fatalf("after the resumed Replace phase: state %d", p[hs])
	}
	if d := diffBlocks(bf.Bytes(), img.target); d != "" {
		t.Fatal(d)
	}
}

// TestReplayShiftedScratchData: a persisted window whose data sits at other
// (non-overlapping) offsets of the scratch region — as a daemon with a
// smaller read-ahead area would write it — is replayed from those offsets.
func TestReplayShiftedScratchData(t *testing.T) {
	img := generate(t, genConfig{seed: 97, blocks: 2000, version: 2, scratch: true})
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
	// Rewrite it as a daemon with a 2 MiB - 64 KiB read-ahead area would:
	// 482-op window, 7744-byte metadata area, data right after it.
	hs := cow.HeaderV2Size
	const n, dataOff = 482, cow.HeaderV2Size + 7744
	data := append([]byte(nil), cowAt[hs+8192:hs+8192+n*bs]...)
	ents := make([]uint64, n)
	for k := range ents {
		ents[k] = binary.LittleEndian.Uint64(cowAt[hs+1+16*k:])
	}
	clear(cowAt[hs+1 : hs+cow.BufferRegionDefaultSize])
	for k, nb := range ents {
		binary.LittleEndian.PutUint64(cowAt[hs+1+16*k:], nb)
		binary.LittleEndian.PutUint64(cowAt[hs+1+16*k+8:], uint64(dataOff+k*bs))
	}
	copy(cowAt[dataOff:], data)
	if _, err := Check(bytes.NewReader(cowAt), int64(len(cowAt)), "c", img.source); err != nil {
		t.Fatal(err)
	}
	cf, bf = faultfs.NewMemFile("c", cowAt), faultfs.NewMemFile("b", baseAt)
	if _, err := runMerge(t, img, cf, bf, nil); err != nil {
		t.Fatal(err)
	}
	if d := diffBlocks(bf.Bytes(), img.target); d != "" {
		t.Fatal(d)
	}
}

// TestInPlaceXorWithoutScratch: an Xor op reading its own destination block
// cannot be replayed without the scratch copy; New refuses it unless told
// otherwise, and merges it with scratch.
func TestInPlaceXorWithoutScratch(t *testing.T) {
	nb := 16
	base := make([]byte, nb*bs)
	for i := range base {
		base[i] = byte(i * 7)
	}
	payload := bytes.Repeat([]byte{0x5a}, bs)
	for _, off := range []uint64{0, 100} { // aligned in place; unaligned, reading blocks 4 and 5
		src := &fakeSource{
			order:   []cow.Op{{Type: cow.OpXor, NewBlock: 5, Source: 5*bs - off, DataLength: bs}},
			payload: map[uint64][]byte{5: payload},
		}
		if off != 0 {
			src.order[0].Source = 4*bs + off
		}
		target := append([]byte(nil), base...)
		s := src.order[0].Source
		for j := 0; j < bs; j++ {
			target[5*bs+j] = base[int(s)+j] ^ 0x5a
		}
		_, err := New(faultfs.NewMemFile("c", makeCOW(t, 2, false)), faultfs.NewMemFile("b", base), src, nil)
		if !errors.Is(err, ErrUnsafe) {
			t.Fatalf("off %d: New without scratch = %v, want ErrUnsafe", off, err)
		}
		for _, o := range []struct {
			scratch bool
			opts    *Options
		}{{false, &Options{AllowUnsafeInPlace: true}}, {true, nil}} {
			bf := faultfs.NewMemFile("b", base)
			e, err := New(faultfs.NewMemFile("c", makeCOW(t, 2, o.scratch)), bf, src, o.opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			if d := diffBlocks(bf.Bytes(), target); d != "" {
				t.Fatalf("off %d scratch %v: %s", off, o.scratch, d)
			}
		}
	}
}

// TestSmallScratchRegion: a 64 KiB buffer_size gives 15 data blocks but room
// for only 14 entries and a terminator; windows must fit both.
func TestSmallScratchRegion(t *testing.T) {
	img := generate(t, genConfig{seed: 99, blocks: 600, version: 2, scratch: true})
	p := append([]byte(nil), img.cowImg[:cow.HeaderV2Size+64<<10]...)
	binary.LittleEndian.PutUint32(p[cow.OffsetBufferSize:], 64<<10)
	cf, bf := faultfs.NewMemFile("c", p), faultfs.NewMemFile("b", img.base)
	var max int
	maxInt := func(a, b int) int {
		if a > b {
			return a
		}
		return b
	}
	e, err := New(cf, bf, img.source, &Options{OnCheckpoint: func(c Checkpoint) {
		if c.Kind == WindowPersisted {
			max = maxInt(max, c.Ops)
			if _, err := Check(cf, int64(len(p)), "c", img.source); err != nil {
				t.Fatal(err)
			}
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if max != 14 {
		t.Fatalf("window of %d ops in a 64 KiB scratch region", max)
	}
	if d := diffBlocks(bf.Bytes(), img.target); d != "" {
		t.Fatal(d)
	}
}
