package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/cow/create/createtest"
	"github.com/vabc-go/vabc/internal/faultfs"
	"github.com/vabc-go/vabc/snapuserd/merge"
)

// Environment of the re-executed test binary in TestApplyKillChild.
const (
	envKillChild = "COWCTL_TEST_KILL_CHILD" // JSON array of apply arguments
	envKillAt    = "COWCTL_TEST_KILL_AT"    // SIGKILL before this write/sync/truncate (0 = never)
)

// TestApplyKillChild is not a test on its own: TestApplyInPlaceSIGKILL runs
// the test binary again with envKillChild set, and this function then runs
// "cowctl apply" and kills its own process with SIGKILL right before the
// n-th write, sync or truncate of the COW or the image.
func TestApplyKillChild(t *testing.T) {
	argsJSON := os.Getenv(envKillChild)
	if argsJSON == "" {
		t.Skip("helper process for TestApplyInPlaceSIGKILL")
	}
	var args []string
	if err := json.Unmarshal([]byte(argsJSON), &args); err != nil {
		t.Fatal(err)
	}
	killAt, _ := strconv.ParseInt(os.Getenv(envKillAt), 10, 64)
	var writes atomic.Int64
	g := &faultfs.Group{Inj: faultfs.InjectorFunc(func(op faultfs.Op) error {
		if op.Kind.IsWrite() && writes.Add(1) == killAt {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // never continue past the kill point
		}
		return nil
	})}
	applyWrap = func(c, b faultfs.File) (faultfs.File, faultfs.File) { return g.Wrap(c), g.Wrap(b) }
	if _, _, err := runTool(t, runApply, args...); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "writes=%d\n", writes.Load())
}

// countWrites runs apply in-process on copies and returns how many
// write/sync/truncate calls it makes.
func countWrites(t *testing.T, src, cowPath string, args []string) int64 {
	dir := t.TempDir()
	s := copyFile(t, src, filepath.Join(dir, "s.img"))
	c := copyFile(t, cowPath, filepath.Join(dir, "c.cow"))
	var n atomic.Int64
	g := &faultfs.Group{Inj: faultfs.InjectorFunc(func(op faultfs.Op) error {
		if op.Kind.IsWrite() {
			n.Add(1)
		}
		return nil
	})}
	applyWrap = func(c, b faultfs.File) (faultfs.File, faultfs.File) { return g.Wrap(c), g.Wrap(b) }
	defer func() { applyWrap = nil }()
	if _, _, err := runTool(t, runApply, append([]string{"--source", s, "--cow", c}, args...)...); err != nil {
		t.Fatal(err)
	}
	return n.Load()
}

func copyFile(t *testing.T, from, to string) string {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, to, b)
}

// TestApplyInPlaceSIGKILL kills a real "cowctl apply --in-place" process
// with SIGKILL at random writes, several times per seed, then lets a run
// finish; the image must equal the target and the COW's merge state must
// pass merge.Check after every kill.
func TestApplyInPlaceSIGKILL(t *testing.T) {
	if os.Getenv(envKillChild) != "" {
		t.Skip("inside the helper process")
	}
	pairs := createtest.Pairs(21, 320)
	shuffled, shifted := pairs[2], pairs[3]
	configs := []struct {
		name  string
		pair  createtest.Pair
		flags []string
	}{
		{"v3-lz4-shuffled", shuffled, []string{"--cow-version", "3", "--compression", "lz4"}},
		{"v2-zstd-shifted-xor", shifted, []string{"--cow-version", "2", "--compression", "zstd", "--xor"}},
		{"v3-gz-shifted-xor", shifted, []string{"--cow-version", "3", "--compression", "gz", "--xor"}},
		{"v2-none-shuffled-noscratch", shuffled, []string{"--cow-version", "2", "--compression", "none", "--no-scratch"}},
		{"v3-zstd-compressible-noscratch", pairs[1], []string{"--cow-version", "3", "--compression", "zstd", "--no-scratch"}},
	}
	const seeds = 25
	base := t.TempDir()
	type prepared struct {
		src, tgt, cow string
		applyArgs     []string
		writes        int64
	}
	prep := make([]prepared, len(configs))
	for i, c := range configs {
		dir := filepath.Join(base, c.name)
		os.Mkdir(dir, 0o755)
		p := prepared{
			src: writeFile(t, filepath.Join(dir, "src.img"), c.pair.Source),
			tgt: writeFile(t, filepath.Join(dir, "tgt.img"), c.pair.Target),
			cow: filepath.Join(dir, "x.cow"),
		}
		if _, _, err := runTool(t, runCreate, append([]string{"--source", p.src, "--target", p.tgt, "-o", p.cow}, c.flags...)...); err != nil {
			t.Fatal(err)
		}
		// Small windows: many windows, commits and scratch replays in a
		// small image.
		p.applyArgs = []string{"--in-place", "--window-blocks", "24", "--size", strconv.Itoa(len(c.pair.Target))}
		p.writes = countWrites(t, p.src, p.cow, p.applyArgs)
		t.Logf("%s: %d writes per uninterrupted apply", c.name, p.writes)
		prep[i] = p
	}
	var scratchKills atomic.Int64 // kills that left a window to replay from scratch
	defer func() {
		t.Logf("%d kills left a persisted window to replay from the scratch region", scratchKills.Load())
		if scratchKills.Load() == 0 {
			t.Errorf("no kill hit a persisted, uncommitted window: the scratch replay path was not exercised")
		}
	}()
	for seed := 0; seed < seeds; seed++ {
		ci := seed % len(configs)
		c, p := configs[ci], prep[ci]
		t.Run(fmt.Sprintf("seed%02d-%s", seed, c.name), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 99))
			dir := t.TempDir()
			img := copyFile(t, p.src, filepath.Join(dir, "img"))
			cowPath := copyFile(t, p.cow, filepath.Join(dir, "x.cow"))
			args := append([]string{"--source", img, "--cow", cowPath}, p.applyArgs...)
			argsJSON, _ := json.Marshal(args)
			kills := 0
			for attempt := 0; ; attempt++ {
				killAt := int64(0)
				if attempt < 4 {
					killAt = 1 + rng.Int64N(p.writes)
				}
				cmd := exec.Command(os.Args[0], "-test.run=^TestApplyKillChild$", "-test.count=1")
				cmd.Env = append(os.Environ(), envKillChild+"="+string(argsJSON), envKillAt+"="+strconv.FormatInt(killAt, 10))
				out, err := cmd.CombinedOutput()
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
						kills++
						if checkMergeState(t, cowPath).ReadAheadState == cow.ReadAheadDone {
							scratchKills.Add(1)
						}
						if kills == 1 {
							// apply -o resumes from the half-merged image
							// without touching the COW.
							before, _ := os.ReadFile(cowPath)
							outImg := filepath.Join(dir, "out.img")
							if _, _, err := runTool(t, runApply, "--source", img, "--cow", cowPath, "-o", outImg, "--size", strconv.Itoa(len(c.pair.Target))); err != nil {
								t.Fatalf("apply -o after kill: %v", err)
							}
							if got, _ := os.ReadFile(outImg); !bytes.Equal(got, c.pair.Target) {
								t.Fatalf("apply -o from the half-merged image differs from the target")
							}
							if after, _ := os.ReadFile(cowPath); !bytes.Equal(before, after) {
								t.Fatalf("apply -o changed the COW")
							}
						}
						// The snapshot view of the half-merged image is
						// still the target.
						if out, _, err := runTool(t, runVerify, "--source", img, "--cow", cowPath, "--target", p.tgt); err != nil {
							t.Fatalf("verify after kill %d (at write %d): %v %s", kills, killAt, err, out)
						}
						continue
					}
				}
				if err != nil {
					t.Fatalf("attempt %d (kill at %d): %v\n%s", attempt, killAt, err, out)
				}
				if killAt == 0 {
					break
				}
				// killAt beyond this run's remaining writes: it finished.
				break
			}
			if kills == 0 {
				t.Errorf("no run was killed")
			}
			got, _ := os.ReadFile(img)
			if !bytes.Equal(got, c.pair.Target) {
				t.Fatalf("after %d kills the image differs from the target", kills)
			}
			r, err := cow.Open(cowPath, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if r.MergeOpStart() != uint64(len(r.MergeOrder())) {
				t.Fatalf("num_merge_ops %d of %d after a complete apply", r.MergeOpStart(), len(r.MergeOrder()))
			}
		})
	}
}

func checkMergeState(t *testing.T, cowPath string) *merge.State {
	t.Helper()
	r, err := cow.Open(cowPath, nil)
	if err != nil {
		t.Fatalf("COW unreadable after kill: %v", err)
	}
	defer r.Close()
	f, err := os.Open(cowPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := merge.Check(f, r.Size(), cowPath, r)
	if err != nil {
		t.Fatalf("merge state after kill: %v", err)
	}
	return st
}

// TestApplyOutputRemovedOnFailure: a failed -o run leaves no image behind,
// and a COW that does not fit the source is refused.
func TestApplyOutputRemovedOnFailure(t *testing.T) {
	pair := createtest.Pairs(31, 64)[1] // compressible
	dir := t.TempDir()
	src := writeFile(t, filepath.Join(dir, "src.img"), pair.Source)
	tgt := writeFile(t, filepath.Join(dir, "tgt.img"), pair.Target)
	cowPath := filepath.Join(dir, "x.cow")
	if _, _, err := runTool(t, runCreate, "--source", src, "--target", tgt, "-o", cowPath, "--compression", "gz"); err != nil {
		t.Fatal(err)
	}
	// Corrupt the end of the last payload (zlib's Adler-32): decoding fails
	// during the merge.
	data, _ := os.ReadFile(cowPath)
	for i := len(data) - 64; i < len(data); i++ {
		data[i] ^= 0xff
	}
	bad := writeFile(t, filepath.Join(dir, "bad.cow"), data)
	out := filepath.Join(dir, "new.img")
	_, _, err := runTool(t, runApply, "--source", src, "--cow", bad, "-o", out)
	if err == nil {
		t.Fatal("apply of a corrupted COW succeeded")
	}
	if _, statErr := os.Stat(out); statErr == nil {
		t.Fatalf("failed apply left %s (error was %v)", out, err)
	}
	t.Log(err)
}

// TestApplyKeepsForeignOutput: an -o file that existed before a run which
// failed early is left alone; ops past --size are refused.
func TestApplyKeepsForeignOutput(t *testing.T) {
	pair := createtest.Pairs(32, 64)[0]
	dir := t.TempDir()
	src := writeFile(t, filepath.Join(dir, "src.img"), pair.Source)
	tgt := writeFile(t, filepath.Join(dir, "tgt.img"), pair.Target)
	out := writeFile(t, filepath.Join(dir, "precious.img"), []byte("keep me"))
	if _, _, err := runTool(t, runApply, "--source", src, "--cow", filepath.Join(dir, "missing.cow"), "-o", out); err == nil {
		t.Fatal("apply with a missing COW succeeded")
	}
	if b, err := os.ReadFile(out); err != nil || string(b) != "keep me" {
		t.Fatalf("pre-existing output changed: %q %v", b, err)
	}
	cowPath := filepath.Join(dir, "x.cow")
	if _, _, err := runTool(t, runCreate, "--source", src, "--target", tgt, "-o", cowPath); err != nil {
		t.Fatal(err)
	}
	_, _, err := runTool(t, runApply, "--source", src, "--cow", cowPath, "--in-place", "--size", "4096")
	if err == nil || !strings.Contains(err.Error(), "past --size") {
		t.Fatalf("ops past --size: %v", err)
	}
}
