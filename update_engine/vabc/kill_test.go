package vabc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/testdata/imagegen"
	"github.com/vabc-go/vabc/update_engine/generate"
	"github.com/vabc-go/vabc/update_engine/payload"
)

// faultFile wraps a COW file: it can skip fsync (page-cache contents survive
// SIGKILL, which is what these tests inject; skipping fsync keeps them fast)
// and SIGKILL its own process at the killAt-th WriteAt, after writing only
// half of that buffer (a torn write).
type faultFile struct {
	cow.File
	noSync bool
	killAt int64
	writes *atomic.Int64
}

func (f *faultFile) Stat() (os.FileInfo, error) {
	return f.File.(interface{ Stat() (os.FileInfo, error) }).Stat()
}

func (f *faultFile) Sync() error {
	if f.noSync {
		return nil
	}
	return f.File.Sync()
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	n := f.writes.Add(1)
	if f.killAt > 0 && n == f.killAt {
		if len(p) > 1 {
			f.File.WriteAt(p[:len(p)/2], off)
		}
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	return f.File.WriteAt(p, off)
}

func noSync(f cow.File) cow.File { return &faultFile{File: f, noSync: true, writes: new(atomic.Int64)} }

func TestMain(m *testing.M) {
	if os.Getenv("VABC_KILL_CHILD") == "1" {
		if err := killChild(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// killChild runs Write as a separate process, killing itself at the write
// given by VABC_KILL_AT.
func killChild() error {
	killAt, err := strconv.ParseInt(os.Getenv("VABC_KILL_AT"), 10, 64)
	if err != nil {
		return err
	}
	v, err := strconv.Atoi(os.Getenv("VABC_COW_VERSION"))
	if err != nil {
		return err
	}
	p, err := payload.Open(os.Getenv("VABC_PAYLOAD"))
	if err != nil {
		return err
	}
	defer p.Close()
	var writes atomic.Int64
	_, err = Write(context.Background(), p, Options{
		OutDir: os.Getenv("VABC_OUT"), OldDir: os.Getenv("VABC_OLD"), CowVersion: uint32(v), Threads: 2,
		WrapFile: func(f cow.File) cow.File { return &faultFile{File: f, noSync: true, killAt: killAt, writes: &writes} },
	})
	return err
}

// TestInterrupted SIGKILLs a real apply process at random writes (sometimes
// twice), resumes it, and checks that the final COWs merge to the target.
func TestInterrupted(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	pairs, err := imagegen.RawPairs(21, 40)
	if err != nil {
		t.Fatal(err)
	}
	// Two partitions with many small operations, so labels are dense.
	pairs[0].Name, pairs[6].Name = "system", "vendor"
	tp := makePayload(t, []imagegen.Pair{pairs[6], pairs[3]}, false, &generate.VABC{CowVersion: 2, Compression: "lz4", XOR: true}, 8<<10)

	// Writes of an uninterrupted run, per version.
	total := map[int]int64{}
	for _, v := range []int{2, 3} {
		var writes atomic.Int64
		out := t.TempDir()
		if _, err := Write(t.Context(), tp.p, Options{OutDir: out, OldDir: tp.oldDir(), CowVersion: uint32(v),
			WrapFile: func(f cow.File) cow.File { return &faultFile{File: f, noSync: true, writes: &writes} }}); err != nil {
			t.Fatal(err)
		}
		tp.checkCOWs(t, out)
		total[v] = writes.Load()
	}
	t.Logf("writes per uninterrupted run: v2 %d, v3 %d", total[2], total[3])

	const seeds = 24
	resumed := 0
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 77))
			v := 2 + seed%2
			out := t.TempDir()
			kills := 1 + seed%3/2 // every third seed is killed twice
			for k := range kills {
				at := 1 + rng.Int64N(total[v])
				cmd := exec.CommandContext(t.Context(), exe, "-test.run=^$")
				cmd.Env = append(os.Environ(), "VABC_KILL_CHILD=1", "VABC_KILL_AT="+strconv.FormatInt(at, 10),
					"VABC_COW_VERSION="+strconv.Itoa(v), "VABC_PAYLOAD="+tp.path, "VABC_OLD="+tp.oldDir(), "VABC_OUT="+out)
				start := time.Now()
				outb, err := cmd.CombinedOutput()
				var ee *exec.ExitError
				switch {
				case err == nil:
					t.Logf("kill %d at write %d: run completed first (%v)", k, at, time.Since(start))
				case errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL:
				default:
					t.Fatalf("child: %v\n%s", err, outb)
				}
			}
			res, err := Write(t.Context(), tp.p, Options{OutDir: out, OldDir: tp.oldDir(), CowVersion: uint32(v), WrapFile: noSync})
			if err != nil {
				t.Fatalf("resume: %v", err)
			}
			for _, r := range res {
				if r.ResumedAt != nil {
					resumed++
					t.Logf("%s resumed at label %d", r.Name, *r.ResumedAt)
				}
			}
			tp.checkCOWs(t, out)
		})
	}
	if resumed < seeds/3 {
		t.Errorf("only %d partition runs resumed from a label", resumed)
	}
}

// errFile fails every WriteAt from the failAt-th on (an I/O error instead of
// a crash).
type errFile struct {
	faultFile
	failAt int64
}

var errInjected = errors.New("injected write error")

func (f *errFile) WriteAt(p []byte, off int64) (int, error) {
	if f.writes.Add(1) >= f.failAt {
		return 0, errInjected
	}
	return f.File.WriteAt(p, off)
}

// TestResume covers resume decisions in-process: a failed run resumes at its
// label with the same settings, starts over with other settings, and a
// finished partition is skipped on a rerun.
func TestResume(t *testing.T) {
	pairs, err := imagegen.RawPairs(3, 32)
	if err != nil {
		t.Fatal(err)
	}
	tp := makePayload(t, []imagegen.Pair{pairs[6]}, false, &generate.VABC{CowVersion: 3, Compression: "lz4", XOR: true}, 8<<10)
	failing := func(at int64) func(cow.File) cow.File {
		return func(f cow.File) cow.File {
			return &errFile{faultFile: faultFile{File: f, noSync: true, writes: new(atomic.Int64)}, failAt: at}
		}
	}
	for _, tc := range []struct {
		name       string
		second     Options
		wantResume bool
	}{
		{"same-settings", Options{}, true}, // v3: the finished COW is found without LastLabel
		{"other-compression", Options{Compression: "zstd"}, false},
		{"other-version", Options{CowVersion: 2}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			_, err := Write(t.Context(), tp.p, Options{OutDir: out, OldDir: tp.oldDir(), WrapFile: failing(70)})
			if !errors.Is(err, errInjected) {
				t.Fatalf("first run: %v, want the injected error", err)
			}
			o := tc.second
			o.OutDir, o.OldDir, o.WrapFile = out, tp.oldDir(), noSync
			res, err := Write(t.Context(), tp.p, o)
			if err != nil {
				t.Fatal(err)
			}
			if got := res[0].ResumedAt != nil; got != tc.wantResume {
				t.Fatalf("resumed %v (%v), want %v", got, res[0].ResumedAt, tc.wantResume)
			}
			if tc.wantResume && *res[0].ResumedAt == 0 {
				t.Errorf("resumed at label 0 after 70 writes")
			}
			tp.checkCOWs(t, out)
			before, _ := os.ReadFile(filepath.Join(out, "mixed.cow"))
			res, err = Write(t.Context(), tp.p, o)
			if err != nil || !res[0].AlreadyComplete || !res[0].Verified {
				t.Fatalf("rerun: %v %+v", err, res)
			}
			if after, _ := os.ReadFile(filepath.Join(out, "mixed.cow")); !bytes.Equal(before, after) {
				t.Fatal("rerun changed the finished COW")
			}
			// A truncated finished COW is rewritten, not skipped.
			os.Truncate(filepath.Join(out, "mixed.cow"), int64(len(before)/2))
			if res, err = Write(t.Context(), tp.p, o); err != nil || res[0].AlreadyComplete {
				t.Fatalf("after truncation: %v %+v", err, res)
			}
			tp.checkCOWs(t, out)
		})
	}
}

// TestCancel cancels a run from its progress callback: Write returns the
// context error without wrapping it in an op error, and a rerun resumes.
func TestCancel(t *testing.T) {
	pairs, err := imagegen.RawPairs(4, 32)
	if err != nil {
		t.Fatal(err)
	}
	tp := makePayload(t, []imagegen.Pair{pairs[6]}, false, &generate.VABC{CowVersion: 2, Compression: "gz", XOR: true}, 8<<10)
	out := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	calls := 0
	_, err = Write(ctx, tp.p, Options{OutDir: out, OldDir: tp.oldDir(), WrapFile: noSync, Threads: 2, Progress: func(done, total int64) {
		if calls++; calls == 3 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	var oe *payload.OpError
	if errors.As(err, &oe) {
		t.Errorf("cancellation reported as an op error: %v", err)
	}
	res, err := Write(t.Context(), tp.p, Options{OutDir: out, OldDir: tp.oldDir(), WrapFile: noSync})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].ResumedAt == nil || *res[0].ResumedAt < 3 {
		t.Fatalf("resumed at %v, want ≥ 3", res[0].ResumedAt)
	}
	tp.checkCOWs(t, out)
}
