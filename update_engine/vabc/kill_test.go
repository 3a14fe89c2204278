package vabc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
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
