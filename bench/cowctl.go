package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// cowctl: create throughput per codec (2 threads) with the COW size ÷ target
// size beside lz4 -1 / zstd -3 of the whole target image, and apply
// throughput beside cp of the same image.
func init() { register("cowctl", benchCowctl) }

const benchImageMiB = 32

func benchCowctl(r *report) error {
	dir, err := os.MkdirTemp("", "vabc-bench-cowctl")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := cowctlBinary(dir)
	if err != nil {
		return err
	}
	src, tgt := benchImages(benchImageMiB << 20)
	srcPath := filepath.Join(dir, "old.img")
	tgtPath := filepath.Join(dir, "new.img")
	if err := os.WriteFile(srcPath, src, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(tgtPath, tgt, 0o644); err != nil {
		return err
	}
	mb := float64(len(tgt)) / 1e6

	r.printf("\n## cowctl create / apply\n\n")
	r.printf("%d MiB system-like image pair (text, incompressible and zero regions; 12%% of blocks rewritten, "+
		"8%% moved, 10%% edited in place). Create runs with `--threads 2 --xor`; v3 uses the 64 KiB compression factor.\n\n", benchImageMiB)
	r.printf("Reference ratios for the whole target image: %s.\n\n", refRatios(tgtPath, len(tgt)))
	r.printf("| COW | codec | create MB/s (wall) | MB per CPU-second | COW size | COW ÷ target | ops |\n|---|---|---:|---:|---:|---:|---|\n")
	var lz4Cow string
	for _, ver := range []string{"3", "2"} {
		for _, codec := range []string{"none", "lz4", "zstd", "gz", "brotli"} {
			if ver == "2" && codec != "lz4" && codec != "gz" {
				continue
			}
			cowPath := filepath.Join(dir, "v"+ver+"-"+codec+".cow")
			start := time.Now()
			cmd := exec.Command(bin, "create", "--source", srcPath, "--target", tgtPath, "-o", cowPath,
				"--cow-version", ver, "--compression", codec, "--threads", "2", "--xor", "--json")
			out, err := cmd.Output()
			if err != nil {
				return fmt.Errorf("cowctl create v%s %s: %v", ver, codec, exitDetail(err))
			}
			sec := time.Since(start).Seconds()
			cpu := (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
			var s struct {
				Ops     map[string]uint64 `json:"ops"`
				CowSize int64             `json:"cow_size"`
			}
			if err := json.Unmarshal(out, &s); err != nil {
				return err
			}
			ops := fmt.Sprintf("%d copy, %d xor, %d replace, %d zero", s.Ops["copy"], s.Ops["xor"], s.Ops["replace"], s.Ops["zero"])
			r.printf("| v%s | %s | %.1f | %.1f | %d | %.3f | %s |\n", ver, codec, mb/sec, mb/cpu, s.CowSize, float64(s.CowSize)/float64(len(tgt)), ops)
			if ver == "3" && codec == "lz4" {
				lz4Cow = cowPath
			}
		}
	}

	// apply -o (copy + merge) and apply --in-place vs cp of the image; best
	// of three runs each (the machine is shared).
	best := func(setup func() error, name string, args ...string) (float64, error) {
		b := 0.0
		for i := 0; i < 3; i++ {
			if setup != nil {
				if err := setup(); err != nil {
					return 0, err
				}
			}
			s, err := timeCmd(name, args...)
			if err != nil {
				return 0, err
			}
			if i == 0 || s < b {
				b = s
			}
		}
		return b, nil
	}
	cpSec, err := best(nil, "cp", srcPath, filepath.Join(dir, "cp.img"))
	if err != nil {
		return err
	}
	cpSyncSec, err := best(nil, "sh", "-c", `cp "$1" "$2" && sync "$2"`, "sh", srcPath, filepath.Join(dir, "cp.img"))
	if err != nil {
		return err
	}
	outSec, err := best(nil, bin, "apply", "--source", srcPath, "--cow", lz4Cow, "-o", filepath.Join(dir, "applied.img"))
	if err != nil {
		return err
	}
	applied, _ := os.ReadFile(filepath.Join(dir, "applied.img"))
	if !bytes.Equal(applied, tgt) {
		return fmt.Errorf("apply -o produced a different image")
	}
	inplace := filepath.Join(dir, "inplace.img")
	cowCopy := filepath.Join(dir, "inplace.cow")
	cowBytes, err := os.ReadFile(lz4Cow)
	if err != nil {
		return err
	}
	fresh := func() error {
		if err := os.WriteFile(inplace, src, 0o644); err != nil {
			return err
		}
		return os.WriteFile(cowCopy, cowBytes, 0o644)
	}
	inSec, err := best(fresh, bin, "apply", "--source", inplace, "--cow", cowCopy, "--in-place")
	if err != nil {
		return err
	}
	if got, _ := os.ReadFile(inplace); !bytes.Equal(got, tgt) {
		return fmt.Errorf("apply --in-place produced a different image")
	}
	r.printf("\n| apply (v3 lz4 COW) | seconds | MB/s of image | ÷ cp |\n|---|---:|---:|---:|\n")
	r.printf("| `cp` of the image (reference) | %.3f | %.1f | 1.00 |\n", cpSec, mb/cpSec)
	r.printf("| `cp` + `sync` of the image (reference) | %.3f | %.1f | %.2f |\n", cpSyncSec, mb/cpSyncSec, cpSec/cpSyncSec)
	r.printf("| `cowctl apply -o` (copy + merge, one sync at the end) | %.3f | %.1f | %.2f |\n", outSec, mb/outSec, cpSec/outSec)
	r.printf("| `cowctl apply --in-place` (durable, fsync per window) | %.3f | %.1f | %.2f |\n", inSec, mb/inSec, cpSec/inSec)
	return nil
}

// cowctlBinary returns bin/cowctl when make build made it, else builds one.
func cowctlBinary(dir string) (string, error) {
	if st, err := os.Stat("bin/cowctl"); err == nil && !st.IsDir() {
		return filepath.Abs("bin/cowctl")
	}
	bin := filepath.Join(dir, "cowctl")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/cowctl").CombinedOutput(); err != nil {
		return "", fmt.Errorf("building cowctl: %v: %s", err, out)
	}
	return bin, nil
}

func timeCmd(name string, args ...string) (float64, error) {
	start := time.Now()
	if err := exec.Command(name, args...).Run(); err != nil {
		return 0, fmt.Errorf("%s: %v", name, exitDetail(err))
	}
	return time.Since(start).Seconds(), nil
}

func exitDetail(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return fmt.Sprintf("%v: %s", err, bytes.TrimSpace(ee.Stderr))
	}
	return err.Error()
}

// refRatios compresses the target with lz4 -1 and zstd -3 (when installed).
func refRatios(path string, size int) string {
	var parts []string
	for _, c := range [][]string{{"lz4", "-1", "-c"}, {"zstd", "-3", "-c", "-q"}} {
		out, err := exec.Command(c[0], append(c[1:], path)...).Output()
		if err != nil {
			parts = append(parts, fmt.Sprintf("`%s %s` unavailable", c[0], c[1]))
			continue
		}
		parts = append(parts, fmt.Sprintf("`%s %s` %.3f", c[0], c[1], float64(len(out))/float64(size)))
	}
	return strings.Join(parts, ", ")
}

// benchImages makes a system-like source image and a target derived from it.
func benchImages(size int) (src, tgt []byte) {
	const bs = 4096
	rng := rand.New(rand.NewPCG(42, 42))
	words := []string{"system", "vendor", "lib64", "android", "framework", "0x7f3a", "return", "const", "\x00\x00", "apk", "\n"}
	text := func(p []byte) {
		for i := 0; i < len(p); {
			w := words[rng.IntN(len(words))]
			i += copy(p[i:], w+" ")
		}
	}
	random := func(p []byte) {
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
	}
	n := size / bs
	src = make([]byte, size)
	for b := 0; b < n; b += 16 { // regions of 16 blocks
		region := src[b*bs : min(b+16, n)*bs]
		switch k := rng.IntN(10); {
		case k < 5:
			text(region)
		case k < 8:
			random(region)
		}
	}
	tgt = bytes.Clone(src)
	for b := 0; b < n; b++ {
		blk := tgt[b*bs : (b+1)*bs]
		switch k := rng.IntN(100); {
		case k < 12:
			if rng.IntN(2) == 0 {
				text(blk)
			} else {
				random(blk)
			}
		case k < 20:
			a := rng.IntN(n)
			copy(blk, src[a*bs:(a+1)*bs])
		case k < 30:
			for e := 0; e < 6; e++ {
				blk[rng.IntN(bs)] ^= byte(1 + rng.IntN(255))
			}
		}
	}
	return src, tgt
}
