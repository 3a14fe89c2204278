package merge

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
)

var killIterations = flag.Int("merge.kill-iterations", 50, "seeded SIGKILL iterations of TestSIGKILL (raise for a soak)")

const killChildEnv = "VABC_MERGE_KILL_CHILD"

func killConfig(seed int) (genConfig, Options) {
	c := genConfig{seed: uint64(1000 + seed), blocks: 900, version: 2 + seed%2, scratch: seed%5 != 4,
		real: seed%4 < 2, comp: []cow.Compression{cow.CompressionLz4, cow.CompressionNone, cow.CompressionZstd}[seed%3],
		backing: seed%3 == 2}
	var o Options
	if seed%3 == 1 {
		o.WindowBlocks = 128
	}
	o.IOUring = seed%2 == 1 // real files: io_uring where the kernel allows it
	return c, o
}

// TestKillChild is the merge process of TestSIGKILL; it does nothing unless
// started by it. It merges the files in the directory named by the
// environment, while a reader checks random blocks against the target.
func TestKillChild(t *testing.T) {
	env := os.Getenv(killChildEnv)
	if env == "" {
		t.Skip("helper process for TestSIGKILL")
	}
	dir, seedStr, _ := strings.Cut(env, ";")
	seed, _ := strconv.Atoi(seedStr)
	c, opts := killConfig(seed)
	img := generate(t, c)
	cf, err := faultfs.Open(filepath.Join(dir, "cow.img"))
	if err != nil {
		t.Fatal(err)
	}
	bf, err := faultfs.Open(filepath.Join(dir, "base.img"))
	if err != nil {
		t.Fatal(err)
	}
	if c.backing { // a separate source device, opened read-only as the daemon does
		sf, err := faultfs.OpenFile(filepath.Join(dir, "backing.img"), os.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer sf.Close()
		opts.Backing = sf
	}
	src := img.source
	if c.real { // parse the COW file itself, as the daemon does
		r, err := cow.Open(filepath.Join(dir, "cow.img"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		src = r
	}
	e, err := New(cf, bf, src, &opts)
	if err != nil {
		t.Fatal(err)
	}
	stale := func(err error) {
		fmt.Fprintln(os.Stderr, "reader:", err)
		os.Exit(3)
	}
	ctx, stop := context.WithCancel(context.Background())
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
		p := make([]byte, bs)
		for ctx.Err() == nil {
			b := uint64(rng.IntN(c.blocks))
			if err := e.ReadBlock(b, p); err != nil {
				stale(err)
			}
			if !bytes.Equal(p, img.target[b*bs:(b+1)*bs]) {
				stale(fmt.Errorf("block %d differs from the target during %v", b, e.Progress().Phase))
			}
		}
	}()
	defer func() { stop(); <-readerDone }()
	fmt.Println("merge-ready")
	if err := e.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestSIGKILL runs the merge in a child process, SIGKILLs it at random
// moments and restarts it until the merge completes; a reader in the child
// checks every block it reads against the target, across kills. After each
// kill the on-disk state must pass Check and AOSP's recovery rule, and the
// final base must equal the target.
func TestSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	kills, runs, partial := 0, 0, 0
	mergeDur := 100 * time.Millisecond // estimate of an uninterrupted merge
	for seed := 0; seed < *killIterations; seed++ {
		c, _ := killConfig(seed)
		img := generate(t, c)
		dir := t.TempDir()
		cowPath, basePath := filepath.Join(dir, "cow.img"), filepath.Join(dir, "base.img")
		if err := os.WriteFile(cowPath, img.cowImg, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(basePath, img.base, 0o644); err != nil {
			t.Fatal(err)
		}
		backingPath := filepath.Join(dir, "backing.img")
		if img.backing != nil {
			if err := os.WriteFile(backingPath, img.backing, 0o444); err != nil {
				t.Fatal(err)
			}
		}
		rng := rand.New(rand.NewPCG(uint64(seed), 99))
		seedKills := 0
		for round := 0; ; round++ {
			if round > 40 {
				t.Fatalf("seed %d: merge not complete after %d restarts", seed, round)
			}
			cmd := exec.Command(exe, "-test.run=^TestKillChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), killChildEnv+"="+dir+";"+strconv.Itoa(seed))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			runs++
			// Wait until the child is about to merge.
			ready := make(chan bool, 1)
			go func() {
				sc := bufio.NewScanner(stdout)
				ok := false
				for sc.Scan() {
					if !ok && sc.Text() == "merge-ready" {
						ok = true
						ready <- true
					}
					stderr.WriteString(sc.Text() + "\n")
				}
				if !ok {
					ready <- false
				}
			}()
			isReady := <-ready
			t0 := time.Now()
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			// Up to two kills per seed at a random moment of the merge
			// (scaled by how long an uninterrupted run took), then let it
			// finish.
			var timer <-chan time.Time
			if isReady && seedKills < 2 {
				timer = time.After(time.Duration(rng.Int64N(int64(mergeDur))))
			}
			var werr error
			killed := false
			select {
			case werr = <-done:
				if isReady && werr == nil && round == 0 {
					mergeDur = (mergeDur + time.Since(t0)) / 2
				}
			case <-timer:
				cmd.Process.Signal(syscall.SIGKILL)
				werr = <-done
				killed = true
				seedKills++
			}
			var ee *exec.ExitError
			switch {
			case werr == nil:
			case killed && errors.As(werr, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL:
				kills++
			default:
				t.Fatalf("seed %d round %d: child: %v\n%s", seed, round, werr, stderr.Bytes())
			}
			cowNow, err := os.ReadFile(cowPath)
			if err != nil {
				t.Fatal(err)
			}
			baseNow, err := os.ReadFile(basePath)
			if err != nil {
				t.Fatal(err)
			}
			st, err := Check(bytes.NewReader(cowNow), int64(len(cowNow)), cowPath, img.source)
			if err != nil {
				t.Fatalf("seed %d round %d: %v", seed, round, err)
			}
			if img.backing != nil {
				if b, err := os.ReadFile(backingPath); err != nil || !bytes.Equal(b, img.backing) {
					t.Fatalf("seed %d round %d: the source device changed (%v)", seed, round, err)
				}
			}
			if got := img.resume(t, cowNow, baseNow); !bytes.Equal(got, img.target) {
				t.Fatalf("seed %d round %d: AOSP recovery: %s", seed, round, diffBlocks(got, img.target))
			}
			if killed && (st.NumMergeOps > 0 || st.ReadAheadState == 2) && !st.Complete {
				partial++
			}
			if werr == nil {
				if !st.Complete {
					t.Fatalf("seed %d: child exited 0 but merge state %+v", seed, st)
				}
				if d := diffBlocks(baseNow, img.target); d != "" {
					t.Fatalf("seed %d: base != target: %s", seed, d)
				}
				break
			}
		}
	}
	t.Logf("%d seeds, %d child runs, %d SIGKILLs (%d left a partially merged state), %v",
		*killIterations, runs, kills, partial, time.Since(start).Round(time.Millisecond))
	if kills < *killIterations || partial < *killIterations/2 {
		t.Fatalf("only %d kills landed, %d mid-merge", kills, partial)
	}
}
