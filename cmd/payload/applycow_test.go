package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/cli"
	"github.com/vabc-go/vabc/testdata/imagegen"
	"github.com/vabc-go/vabc/update_engine/generate"
	"github.com/vabc-go/vabc/update_engine/payload"
	"github.com/vabc-go/vabc/update_engine/vabc"
)

// TestApplyCOW runs apply-cow on a generated incremental payload and checks
// that it writes exactly what the library writes with the same settings, and
// that the COWs are complete and merge-safe. (Merging them back into images
// is tested in update_engine/vabc.)
func TestApplyCOW(t *testing.T) {
	old, nw, err := imagegen.Raw(imagegen.Mixed, 4, 40)
	if err != nil {
		t.Fatal(err)
	}
	res, err := generate.Generate(t.Context(), generate.Config{
		Partitions: []generate.Partition{{Name: "system", Old: old, New: nw}},
		ChunkSize:  16 << 10, MinorVersion: -1,
		VABC: &generate.VABC{CowVersion: 2, Compression: "lz4", XOR: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pp := filepath.Join(dir, "payload.bin")
	oldDir := filepath.Join(dir, "old")
	os.MkdirAll(oldDir, 0o755)
	os.WriteFile(pp, res.Payload, 0o644)
	os.WriteFile(filepath.Join(oldDir, "system.img"), old, 0o644)

	for _, tc := range []struct {
		name  string
		flags []string
		opts  vabc.Options
	}{
		{"manifest", nil, vabc.Options{}},
		{"v3-zstd-64k", []string{"--cow-version", "3", "--compression", "zstd,5", "--compression-factor", "64K"},
			vabc.Options{CowVersion: 3, Compression: "zstd,5", CompressionFactor: 64 << 10}},
		{"no-xor", []string{"--no-xor", "-p", "system", "--threads", "1"}, vabc.Options{DisableXOR: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			args := append([]string{"apply-cow", "--old", oldDir, "-o", out, "--json"}, tc.flags...)
			stdout, _, err := runCmd(t, append(args, pp)...)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Partitions []vabc.Result `json:"partitions"`
			}
			if err := json.Unmarshal([]byte(stdout), &got); err != nil || len(got.Partitions) != 1 {
				t.Fatalf("json: %v\n%s", err, stdout)
			}
			cowPath := filepath.Join(out, "system.cow")
			r, err := cow.Open(cowPath, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if err := r.VerifyMergeOps(); err != nil {
				t.Fatal(err)
			}
			end := uint64(cow.EndOfInstallLabel)
			if re, err := cow.Open(cowPath, &cow.ReaderOptions{Label: &end}); err != nil {
				t.Errorf("no end-of-install label: %v", err)
			} else {
				re.Close()
			}
			p, err := payload.Open(pp)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			ref := t.TempDir()
			o := tc.opts
			o.OutDir, o.OldDir = ref, oldDir
			if _, err := vabc.Write(t.Context(), p, o); err != nil {
				t.Fatal(err)
			}
			a, _ := os.ReadFile(cowPath)
			b, _ := os.ReadFile(filepath.Join(ref, "system.cow"))
			if !bytes.Equal(a, b) {
				t.Fatal("apply-cow output differs from vabc.Write with the same settings")
			}
			// A rerun rewrites the same file.
			if _, _, err := runCmd(t, append(args, pp)...); err != nil {
				t.Fatal(err)
			}
			if a2, _ := os.ReadFile(cowPath); !bytes.Equal(a, a2) {
				t.Fatal("rerun wrote a different COW")
			}
		})
	}
	t.Run("text", func(t *testing.T) {
		stdout, _, err := runCmd(t, "apply-cow", "--old", oldDir, "-o", t.TempDir(), pp)
		if err != nil || !strings.Contains(stdout, "system.cow") || !strings.Contains(stdout, "COW v2 lz4") {
			t.Fatalf("%v\n%s", err, stdout)
		}
	})
	for _, args := range [][]string{
		{"apply-cow", pp},
		{"apply-cow", "-o", dir},
		{"apply-cow", "-o", dir, "--cow-version", "4", pp},
		{"apply-cow", "-o", dir, "--compression-factor", "lots", pp},
	} {
		if _, _, err := runCmd(t, args...); !cli.IsUsage(err) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	if _, _, err := runCmd(t, "apply-cow", "-o", t.TempDir(), pp); err == nil || !strings.Contains(err.Error(), "--old") {
		t.Errorf("delta without --old: %v", err)
	}
}

func TestMain(m *testing.M) {
	// Child mode for TestApplyCOWKilled: run one command as a separate
	// process so that the parent can SIGKILL it.
	if args := os.Getenv("PAYLOAD_TEST_CHILD_ARGS"); args != "" {
		if err := run(context.Background(), strings.Split(args, "\x1f"), io.Discard, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestApplyCOWKilled runs `payload apply-cow` as a real process, SIGKILLs it
// after a random delay, and reruns it: the result must verify (old + COW
// hashes to new_partition_info.hash, merge order safe) whatever the kill hit.
func TestApplyCOWKilled(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	old, nw, err := imagegen.Raw(imagegen.Mixed, 8, 256)
	if err != nil {
		t.Fatal(err)
	}
	res, err := generate.Generate(t.Context(), generate.Config{
		Partitions: []generate.Partition{{Name: "system", Old: old, New: nw}},
		ChunkSize:  16 << 10, MinorVersion: -1,
		VABC: &generate.VABC{CowVersion: 3, Compression: "lz4", XOR: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pp := filepath.Join(dir, "payload.bin")
	oldDir := filepath.Join(dir, "old")
	os.MkdirAll(oldDir, 0o755)
	os.WriteFile(pp, res.Payload, 0o644)
	os.WriteFile(filepath.Join(oldDir, "system.img"), old, 0o644)

	// Time one uninterrupted child run to pick kill delays inside it.
	child := func(out string, version string) *exec.Cmd {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), "PAYLOAD_TEST_CHILD_ARGS="+strings.Join([]string{"apply-cow", "--old", oldDir, "-o", out, "--cow-version", version, pp}, "\x1f"))
		return cmd
	}
	start := time.Now()
	if out, err := child(t.TempDir(), "3").CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	full := time.Since(start)
	t.Logf("uninterrupted apply-cow process: %v", full)
	rng := rand.New(rand.NewPCG(5, 6))
	killed := 0
	for seed := range 8 {
		version := []string{"2", "3"}[seed%2]
		out := t.TempDir()
		cmd := child(out, version)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.Int64N(int64(full))))
		cmd.Process.Signal(syscall.SIGKILL)
		if err := cmd.Wait(); err != nil {
			killed++
		}
		stdout, _, err := runCmd(t, "apply-cow", "--old", oldDir, "-o", out, "--cow-version", version, "--json", pp)
		if err != nil {
			t.Fatalf("seed %d: rerun: %v", seed, err)
		}
		var got struct {
			Partitions []vabc.Result `json:"partitions"`
		}
		if err := json.Unmarshal([]byte(stdout), &got); err != nil || len(got.Partitions) != 1 || !got.Partitions[0].Verified {
			t.Fatalf("seed %d: %v\n%s", seed, err, stdout)
		}
	}
	t.Logf("%d of 8 runs were killed before finishing", killed)
}
