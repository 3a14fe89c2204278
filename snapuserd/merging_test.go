package snapuserd_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/cow/create"
	"github.com/vabc-go/vabc/cow/create/createtest"
	"github.com/vabc-go/vabc/internal/faultfs"
	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/merge"
	"github.com/vabc-go/vabc/snapuserd/proto"
)

// vabPart is one Virtual A/B partition on disk: base.img starts as the
// source image (the merge writes the target into it in place) and the COW
// is built from source and target with cow/create.
type vabPart struct {
	misc, cow, base string
	source, target  []byte
}

func newVABPart(t testing.TB, dir, misc string, pair createtest.Pair, version int, noScratch bool) vabPart {
	t.Helper()
	p := vabPart{misc: misc, cow: filepath.Join(dir, misc+".cow"), base: filepath.Join(dir, misc+".img"), source: pair.Source, target: pair.Target}
	if err := os.WriteFile(p.base, pair.Source, 0o644); err != nil {
		t.Fatal(err)
	}
	wo := cow.WriterOptions{Compression: cow.CompressionLz4, NoScratch: noScratch}
	if version == 3 {
		wo.CompressionFactor = 64 << 10
	}
	if _, err := create.Build(t.Context(), create.Image{R: bytes.NewReader(pair.Source), Size: int64(len(pair.Source))},
		create.Image{R: bytes.NewReader(pair.Target), Size: int64(len(pair.Target))}, p.cow,
		create.Options{Xor: !noScratch, Threads: 1}, create.CowOptions{Version: version, Writer: wo}, nil); err != nil {
		t.Fatal(err)
	}
	return p
}

// readCOW reads p's COW file and opens a reader over its bytes.
func (p vabPart) readCOW(t testing.TB) ([]byte, *cow.Reader) {
	t.Helper()
	b, err := os.ReadFile(p.cow)
	if err != nil {
		t.Fatal(err)
	}
	r, err := cow.NewReader(bytes.NewReader(b), int64(len(b)), nil)
	if err != nil {
		t.Fatal(err)
	}
	return b, r
}

// sameSizePairs returns createtest pairs whose target has the source's size.
func sameSizePairs(seed uint64, blocks int) map[string]createtest.Pair {
	out := map[string]createtest.Pair{}
	for _, p := range createtest.Pairs(seed, blocks) {
		if len(p.Source) == len(p.Target) {
			out[p.Name] = p
		}
	}
	return out
}

func newMergeManager(fe snapuserd.Frontend, mc snapuserd.MergeConfig) *snapuserd.Manager {
	return snapuserd.NewManager(snapuserd.Config{
		Frontend: fe,
		Open:     func(req proto.InitRequest) (snapuserd.Device, error) { return snapuserd.OpenSnapshot(req, nil) },
		Merge:    mc,
	})
}

// randomReader reads random (sector, len) ranges of each partition through
// the emulated dm-user kernel side until stop, checking every byte against
// the target.
func randomReader(t *testing.T, fe *snapuserd.EmulatedDmUser, parts []vabPart, seed uint64, stop chan struct{}, n *atomic.Int64) *sync.WaitGroup {
	var wg sync.WaitGroup
	for i, p := range parts {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			tgt := fe.Target(p.misc)
			nsec := int64(len(p.target) / 512)
			buf := make([]byte, 64<<10)
			for {
				select {
				case <-stop:
					return
				default:
				}
				sec := rng.Int64N(nsec)
				l := min(1+rng.Int64N(int64(len(buf)/512)), nsec-sec)
				b := buf[:l*512]
				if _, err := tgt.ReadAt(b, sec*512); err != nil {
					t.Errorf("%s: read at sector %d: %v", p.misc, sec, err)
					return
				}
				if !bytes.Equal(b, p.target[sec*512:(sec+l)*512]) {
					t.Errorf("%s: read of %d bytes at sector %d differs from the target", p.misc, len(b), sec)
					return
				}
				n.Add(1)
			}
		})
	}
	return &wg
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// mergeThreadPriorities returns the nice value and ioprio of every thread of
// this process.
func mergeThreadPriorities(t *testing.T) (nice map[int]int, ioprio map[int]int) {
	nice, ioprio = map[int]int{}, map[int]int{}
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Skipf("no /proc/self/task: %v", err)
	}
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		b, err := os.ReadFile(filepath.Join("/proc/self/task", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the parenthesised comm: state is field 3, nice 19.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 16 {
			nice[tid], _ = strconv.Atoi(f[16])
		}
		const ioprioWhoProcess = 1
		r, _, errno := unix.Syscall(unix.SYS_IOPRIO_GET, ioprioWhoProcess, uintptr(tid), 0)
		if errno == 0 {
			ioprio[tid] = int(r)
		}
	}
	return nice, ioprio
}

// TestMergeThroughDaemon drives three partitions' merges through the
// Manager: getstatus transitions, num_merge_threads (the others wait
// queued), pause_merge parking, merge thread priority, merge_percent, and
// random reads through the emulated dm-user device during the whole merge.
func TestMergeThroughDaemon(t *testing.T) {
	pairs := sameSizePairs(11, 600)
	for _, threads := range []int{1, 2} {
		t.Run(fmt.Sprintf("num_merge_threads=%d", threads), func(t *testing.T) {
			dir := t.TempDir()
			parts := []vabPart{
				newVABPart(t, dir, "system", pairs["shuffled"], 3, false),
				newVABPart(t, dir, "vendor", pairs["shifted"], 2, false),
				newVABPart(t, dir, "product", pairs["zeros"], 3, true),
			}
			fe := &snapuserd.EmulatedDmUser{Workers: 2}
			m := newMergeManager(fe, snapuserd.MergeConfig{Threads: threads, Nice: merge.BackgroundNice, IdleIO: true})
			defer m.Shutdown()
			for _, p := range parts {
				if _, err := m.InitHandler(proto.InitRequest{Misc: p.misc, Cow: p.cow, Backing: p.base, BasePath: p.base}); err != nil {
					t.Fatal(err)
				}
				if err := m.StartHandler(p.misc); err != nil {
					t.Fatal(err)
				}
				if st := m.MergeStatus(p.misc); st != proto.StatusSnapshot {
					t.Fatalf("%s: status before initiate_merge %q", p.misc, st)
				}
			}
			stop := make(chan struct{})
			var nReads atomic.Int64
			wg := randomReader(t, fe, parts, uint64(threads), stop, &nReads)
			defer func() { close(stop); wg.Wait() }()

			m.PauseMerge()
			for _, p := range parts {
				if err := m.InitiateMerge(p.misc); err != nil {
					t.Fatal(err)
				}
				if err := m.InitiateMerge(p.misc); err != nil {
					t.Fatalf("second initiate_merge: %v", err)
				}
				if st := m.MergeStatus(p.misc); st != proto.StatusMerge {
					t.Fatalf("%s: status after initiate_merge %q", p.misc, st)
				}
			}
			// Paused: exactly `threads` merges hold a slot and park; the
			// others wait queued. Nothing is merged.
			running := func() (parked, queued int) {
				for _, p := range parts {
					pr, ok := m.MergeProgress(p.misc)
					if !ok {
						t.Fatalf("%s: no merge progress", p.misc)
					}
					if pr.NumMergeOps != 0 {
						t.Fatalf("%s: %d ops merged while paused", p.misc, pr.NumMergeOps)
					}
					switch {
					case pr.Parked:
						parked++
					case pr.Phase == merge.PhaseQueued:
						queued++
					}
				}
				return
			}
			waitFor(t, "merges to park", func() bool { p, q := running(); return p == threads && q == len(parts)-threads })
			time.Sleep(30 * time.Millisecond)
			if p, q := running(); p != threads || q != len(parts)-threads {
				t.Fatalf("%d parked, %d queued; want %d, %d", p, q, threads, len(parts)-threads)
			}
			if pct := m.MergePercent(); pct != 0 {
				t.Fatalf("merge_percent while paused: %v", pct)
			}
			// The parked merge threads run at background priority.
			nice, ioprio := mergeThreadPriorities(t)
			bg := 0
			for tid, n := range nice {
				if n == merge.BackgroundNice && ioprio[tid]>>13 == 3 {
					bg++
				}
			}
			if bg < threads {
				t.Errorf("%d threads with nice %d and IOPRIO_CLASS_IDLE, want ≥ %d (nice %v ioprio %v)", bg, merge.BackgroundNice, threads, nice, ioprio)
			}

			m.ResumeMerge()
			for _, p := range parts {
				waitFor(t, p.misc+" merge", func() bool {
					st := m.MergeStatus(p.misc)
					if st != proto.StatusMerge && st != proto.StatusMergeComplete {
						t.Fatalf("%s: status %q during merge", p.misc, st)
					}
					return st == proto.StatusMergeComplete
				})
			}
			if pct := m.MergePercent(); pct != 100 {
				t.Errorf("merge_percent after the merges: %v", pct)
			}
			before := nReads.Load()
			waitFor(t, "reads after the merge", func() bool { return nReads.Load() > before+50 })
			for _, p := range parts {
				base, err := os.ReadFile(p.base)
				if err != nil || !bytes.Equal(base, p.target) {
					t.Errorf("%s: base differs from the target after the merge (%v)", p.misc, err)
				}
			}
			t.Logf("%d verified reads", nReads.Load())
		})
	}
}

// TestMergeStopAndResume: delete stops a running merge; a new daemon
// (Manager) on the same files serves the partially merged snapshot
// correctly before initiate_merge and finishes the merge after it; a third
// one reports snapshot-merge-complete before any initiate_merge.
func TestMergeStopAndResume(t *testing.T) {
	pair := sameSizePairs(12, 2000)["shuffled"]
	p := newVABPart(t, t.TempDir(), "system", pair, 2, false)
	req := proto.InitRequest{Misc: p.misc, Cow: p.cow, Backing: p.base, BasePath: p.base}
	partial := false
	for gen := 0; gen < 20; gen++ {
		fe := &snapuserd.EmulatedDmUser{Workers: 2}
		m := newMergeManager(fe, snapuserd.MergeConfig{})
		if _, err := m.InitHandler(req); err != nil {
			t.Fatal(err)
		}
		if err := m.StartHandler(p.misc); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(p.target))
		if _, err := fe.Target(p.misc).ReadAt(got, 0); err != nil || !bytes.Equal(got, p.target) {
			t.Fatalf("generation %d: read before initiate_merge: %v, equal %v", gen, err, bytes.Equal(got, p.target))
		}
		st := m.MergeStatus(p.misc)
		if st == proto.StatusMergeComplete {
			if !partial {
				t.Error("no generation stopped mid-merge")
			}
			m.Shutdown()
			break
		}
		if st != proto.StatusSnapshot {
			t.Fatalf("generation %d: status %q", gen, st)
		}
		if err := m.InitiateMerge(p.misc); err != nil {
			t.Fatal(err)
		}
		if gen < 3 {
			// Stop at a random point: after the first checkpoint or so.
			waitFor(t, "progress", func() bool {
				pr, _ := m.MergeProgress(p.misc)
				return pr.NumMergeOps > 0 || pr.Phase == merge.PhaseComplete
			})
			pr, _ := m.MergeProgress(p.misc)
			partial = partial || pr.Phase != merge.PhaseComplete
			if err := m.DeleteHandler(p.misc); err != nil {
				t.Fatal(err)
			}
		} else {
			waitFor(t, "merge", func() bool { return m.MergeStatus(p.misc) == proto.StatusMergeComplete })
		}
		m.Shutdown()
	}
	base, err := os.ReadFile(p.base)
	if err != nil || !bytes.Equal(base, p.target) {
		t.Fatalf("base differs from the target (%v)", err)
	}
}

// TestMergeFailure: a write error on the base device fails the merge:
// getstatus says snapshot-merge-failed, merge_percent counts it, reads of
// the failed window are I/O errors (never wrong data), and a new engine on
// the same files finishes the merge.
func TestMergeFailure(t *testing.T) {
	pair := sameSizePairs(13, 800)["shuffled"]
	p := newVABPart(t, t.TempDir(), "system", pair, 3, false)
	cowB, err := os.ReadFile(p.cow)
	if err != nil {
		t.Fatal(err)
	}
	cowF := faultfs.NewMemFile("system.cow", cowB)
	baseF := faultfs.NewMemFile("system.img", p.source)
	open := func(inj faultfs.Injector) *snapuserd.Snapshot {
		s, err := snapuserd.NewSnapshot(p.misc, cowF, int64(len(cowB)), baseF, baseF, int64(len(p.source)), "system.cow")
		if err != nil {
			t.Fatal(err)
		}
		var b faultfs.File = baseF
		if inj != nil {
			b = faultfs.Wrap(baseF, inj)
		}
		s.SetMergeFiles(cowF, b, nil)
		return s
	}
	fe := &snapuserd.EmulatedDmUser{Workers: 1}
	m := snapuserd.NewManager(snapuserd.Config{Frontend: fe, Open: func(proto.InitRequest) (snapuserd.Device, error) {
		return open(faultfs.Writes(faultfs.OnIndex(1))), nil
	}})
	defer m.Shutdown()
	if _, err := m.InitHandler(proto.InitRequest{Misc: p.misc, Cow: "c", Backing: "b", BasePath: "b"}); err != nil {
		t.Fatal(err)
	}
	if err := m.StartHandler(p.misc); err != nil {
		t.Fatal(err)
	}
	if err := m.InitiateMerge(p.misc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "failure", func() bool { return m.MergeStatus(p.misc) == proto.StatusMergeFailed })
	pr, _ := m.MergeProgress(p.misc)
	if pr.Err == nil || !strings.Contains(pr.Err.Error(), "injected") {
		t.Errorf("merge error %v", pr.Err)
	}
	if pct := m.MergePercent(); pct != pr.Percent {
		t.Errorf("merge_percent %v, engine %v", pct, pr.Percent)
	}
	bad := 0
	blk := make([]byte, 4096)
	for b := 0; b < len(p.target)/4096; b++ {
		if _, err := fe.Target(p.misc).ReadAt(blk, int64(b)*4096); err != nil {
			bad++
			continue
		}
		if !bytes.Equal(blk, p.target[b*4096:(b+1)*4096]) {
			t.Fatalf("block %d: wrong data after the merge failed", b)
		}
	}
	if bad == 0 {
		t.Error("no read of the failed window was refused")
	}
	// A new engine over the same files resumes and completes.
	s := open(nil)
	e, _, err := s.PrepareMerge(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(baseF.Bytes(), p.target) {
		t.Fatal("base differs from the target after the resumed merge")
	}
	if _, _, err := s.PrepareMerge(nil); err == nil {
		t.Error("second PrepareMerge succeeded")
	}
}

// TestInitiateMergeErrors: unknown or unattached handlers, devices that
// cannot merge.
func TestInitiateMergeErrors(t *testing.T) {
	tr := sameSizePairs(14, 64)["random"]
	dir := t.TempDir()
	p := newVABPart(t, dir, "system", tr, 3, false)
	fe := &snapuserd.EmulatedDmUser{}
	m := newMergeManager(fe, snapuserd.MergeConfig{})
	defer m.Shutdown()
	if err := m.InitiateMerge("nosuch"); err == nil {
		t.Error("initiate_merge of an unknown handler succeeded")
	}
	if _, err := m.InitHandler(proto.InitRequest{Misc: p.misc, Cow: p.cow, Backing: p.base, BasePath: p.base}); err != nil {
		t.Fatal(err)
	}
	if err := m.InitiateMerge(p.misc); err == nil {
		t.Error("initiate_merge before start succeeded")
	}
	// A snapshot without writable files cannot merge.
	s, err := snapuserd.NewSnapshot("x", bytes.NewReader(nil), 0, nil, nil, 4096, "x.cow")
	if err == nil {
		if _, _, err := s.PrepareMerge(nil); err == nil {
			t.Error("PrepareMerge without merge files succeeded")
		}
	}
}
