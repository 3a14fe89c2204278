package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vabc-go/vabc/cow/create/createtest"
)

// run calls a subcommand like main does and returns stdout, stderr.
func runTool(t *testing.T, fn func(ctx contextT, args []string, stdout, stderr ioWriter) error, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := fn(t.Context(), args, &out, &errb)
	return out.String(), errb.String(), err
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func testPairs(t *testing.T, blocks int) []createtest.Pair {
	pairs := createtest.Pairs(11, blocks)
	if p, err := createtest.Ext4Pair(t.TempDir(), 11, 2048); err == nil {
		pairs = append(pairs, p)
	} else {
		t.Logf("ext4 pair skipped: %v", err)
	}
	return pairs
}

// TestCreateApplyVerifyMatrix: for every pair, codec and COW version,
// create → apply -o gives the target byte for byte, apply leaves the COW
// untouched, verify passes, and verify fails on a corrupted COW.
func TestCreateApplyVerifyMatrix(t *testing.T) {
	for _, pair := range testPairs(t, 160) {
		dir := t.TempDir()
		src := writeFile(t, filepath.Join(dir, "src.img"), pair.Source)
		tgt := writeFile(t, filepath.Join(dir, "tgt.img"), pair.Target)
		for _, ver := range []string{"2", "3"} {
			// brotli at quality 6: its default 11 runs at about 1 MB/s and
			// would dominate the test time; the codec and format are the same.
			for _, codec := range []string{"none", "lz4", "zstd", "gz", "brotli,6"} {
				t.Run(fmt.Sprintf("%s/v%s/%s", pair.Name, ver, codec), func(t *testing.T) {
					cowPath := filepath.Join(dir, fmt.Sprintf("v%s-%s.cow", ver, codec[:2]))
					out, _, err := runTool(t, runCreate, "--source", src, "--target", tgt, "-o", cowPath,
						"--cow-version", ver, "--compression", codec, "--xor", "--threads", "2", "--json")
					if err != nil {
						t.Fatal(err)
					}
					var s summary
					if err := json.Unmarshal([]byte(out), &s); err != nil {
						t.Fatalf("create --json: %v: %s", err, out)
					}
					if s.CowSize <= 0 || s.TargetSize != int64(len(pair.Target)) {
						t.Fatalf("summary %+v", s)
					}
					cowBefore, _ := os.ReadFile(cowPath)
					newImg := filepath.Join(dir, "new.img")
					if _, _, err := runTool(t, runApply, "--source", src, "--cow", cowPath, "-o", newImg,
						"--size", fmt.Sprint(len(pair.Target))); err != nil {
						t.Fatal(err)
					}
					if got, _ := os.ReadFile(newImg); !bytes.Equal(got, pair.Target) {
						t.Fatalf("apply -o: image differs from target (%d vs %d bytes)", len(got), len(pair.Target))
					}
					if cowAfter, _ := os.ReadFile(cowPath); !bytes.Equal(cowBefore, cowAfter) {
						t.Fatal("apply -o modified the COW")
					}
					if got, _ := os.ReadFile(src); !bytes.Equal(got, pair.Source) {
						t.Fatal("apply -o modified the source")
					}
					if out, _, err := runTool(t, runVerify, "--source", src, "--cow", cowPath, "--target", tgt); err != nil || !strings.HasPrefix(out, "OK") {
						t.Fatalf("verify: %v %s", err, out)
					}
					// Corrupt one byte in the middle of the last payload.
					bad := filepath.Join(dir, "bad.cow")
					data := bytes.Clone(cowBefore)
					data[len(data)-1-min(len(data)/50, 2000)] ^= 0xa5
					writeFile(t, bad, data)
					out, _, err = runTool(t, runVerify, "--source", src, "--cow", bad, "--target", tgt, "--json")
					if err == nil {
						t.Fatalf("verify passed a corrupted COW: %s", out)
					}
					var vr verifyResult
					if jerr := json.Unmarshal([]byte(out), &vr); jerr != nil || vr.OK {
						t.Fatalf("verify --json on corrupted COW: %v %s", jerr, out)
					}
				})
			}
		}
	}
}

// TestApplyInPlace: --in-place merges into the source, records completion in
// the COW, and a second run is a no-op.
func TestApplyInPlace(t *testing.T) {
	for _, pair := range createtest.Pairs(12, 200) {
		t.Run(pair.Name, func(t *testing.T) {
			dir := t.TempDir()
			src := writeFile(t, filepath.Join(dir, "src.img"), pair.Source)
			tgt := writeFile(t, filepath.Join(dir, "tgt.img"), pair.Target)
			cowPath := filepath.Join(dir, "x.cow")
			if _, _, err := runTool(t, runCreate, "--source", src, "--target", tgt, "-o", cowPath, "--xor"); err != nil {
				t.Fatal(err)
			}
			size := fmt.Sprint(len(pair.Target))
			for i := 0; i < 2; i++ {
				out, _, err := runTool(t, runApply, "--source", src, "--cow", cowPath, "--in-place", "--size", size, "--json")
				if err != nil {
					t.Fatal(err)
				}
				var res applyResult
				json.Unmarshal([]byte(out), &res)
				if i == 1 && res.Merged != 0 {
					t.Fatalf("second run merged %d ops", res.Merged)
				}
				if got, _ := os.ReadFile(src); !bytes.Equal(got, pair.Target) {
					t.Fatalf("run %d: merged image differs from target", i)
				}
			}
		})
	}
}

func TestEstimateMatchesCreate(t *testing.T) {
	pair := createtest.Pairs(13, 300)[1]
	dir := t.TempDir()
	src := writeFile(t, filepath.Join(dir, "src.img"), pair.Source)
	tgt := writeFile(t, filepath.Join(dir, "tgt.img"), pair.Target)
	for _, args := range [][]string{{"--cow-version", "3", "--compression", "zstd"}, {"--cow-version", "2", "--compression", "gz", "--xor"}} {
		out, _, err := runTool(t, runEstimate, append([]string{"--source", src, "--target", tgt, "--json"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		var est summary
		json.Unmarshal([]byte(out), &est)
		out, _, err = runTool(t, runCreate, append([]string{"--source", src, "--target", tgt, "-o", filepath.Join(dir, "x.cow"), "--json"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		var got summary
		json.Unmarshal([]byte(out), &got)
		if est.CowSize != got.CowSize || fmt.Sprint(est.Ops) != fmt.Sprint(got.Ops) {
			t.Fatalf("%v: estimate %d %v, created %d %v", args, est.CowSize, est.Ops, got.CowSize, got.Ops)
		}
	}
}

func TestCreateDeterministicFile(t *testing.T) {
	pair := createtest.Pairs(14, 600)[2]
	dir := t.TempDir()
	src := writeFile(t, filepath.Join(dir, "src.img"), pair.Source)
	tgt := writeFile(t, filepath.Join(dir, "tgt.img"), pair.Target)
	var ref []byte
	for _, th := range []string{"1", "2", "7"} {
		p := filepath.Join(dir, "t"+th+".cow")
		if _, _, err := runTool(t, runCreate, "--source", src, "--target", tgt, "-o", p, "--threads", th, "--xor", "--compression", "zstd"); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		if ref == nil {
			ref = b
		} else if !bytes.Equal(ref, b) {
			t.Fatalf("--threads %s: different COW bytes", th)
		}
	}
}

func TestToolUsageErrors(t *testing.T) {
	dir := t.TempDir()
	img := writeFile(t, filepath.Join(dir, "a.img"), make([]byte, 8192))
	tests := []struct {
		name string
		fn   func(ctx contextT, args []string, stdout, stderr ioWriter) error
		args []string
	}{
		{"create missing flags", runCreate, []string{"--source", img}},
		{"create bad version", runCreate, []string{"--source", img, "--target", img, "-o", dir + "/x", "--cow-version", "4"}},
		{"create bad codec", runCreate, []string{"--source", img, "--target", img, "-o", dir + "/x", "--compression", "lzma"}},
		{"create bad factor", runCreate, []string{"--source", img, "--target", img, "-o", dir + "/x", "--compression-factor", "48K"}},
		{"create v2 factor", runCreate, []string{"--source", img, "--target", img, "-o", dir + "/x", "--cow-version", "2", "--compression-factor", "64K"}},
		{"create unknown flag", runCreate, []string{"--bogus"}},
		{"create xor without scratch", runCreate, []string{"--source", img, "--target", img, "-o", dir + "/x", "--xor", "--no-scratch"}},
		{"create extra arg", runCreate, []string{"--source", img, "--target", img, "-o", dir + "/x", "extra"}},
		{"apply both outputs", runApply, []string{"--source", img, "--cow", img, "--in-place", "-o", dir + "/y"}},
		{"apply no output", runApply, []string{"--source", img, "--cow", img}},
		{"apply -o source", runApply, []string{"--source", img, "--cow", dir + "/none", "-o", img}},
		{"verify missing", runVerify, []string{"--cow", img}},
		{"estimate missing", runEstimate, []string{"--target", img}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runTool(t, tc.fn, tc.args...)
			if err == nil || !isToolUsage(err) {
				t.Fatalf("got %v, want a usage error", err)
			}
		})
	}
	// --help is not an error.
	for _, fn := range []func(ctx contextT, args []string, stdout, stderr ioWriter) error{runCreate, runApply, runVerify, runEstimate} {
		if _, help, err := runTool(t, fn, "--help"); err != nil || !strings.Contains(help, "usage: cowctl") {
			t.Fatalf("--help: %v %q", err, help)
		}
	}
}

func TestCreateRefusesMissingInput(t *testing.T) {
	dir := t.TempDir()
	_, _, err := runTool(t, runCreate, "--source", dir+"/nope.img", "--target", dir+"/nope2.img", "-o", dir+"/x.cow")
	if err == nil || isToolUsage(err) {
		t.Fatalf("got %v, want a runtime error", err)
	}
	if _, statErr := os.Stat(dir + "/x.cow"); statErr == nil {
		t.Fatal("COW written for missing input")
	}
}

// TestExitCodes drives the subcommands through main's dispatcher: verify
// mismatch → 1, usage error → 2, success → 0.
func TestExitCodes(t *testing.T) {
	pair := createtest.Pairs(15, 64)[1]
	dir := t.TempDir()
	src := writeFile(t, filepath.Join(dir, "src.img"), pair.Source)
	tgt := writeFile(t, filepath.Join(dir, "tgt.img"), pair.Target)
	cowPath := filepath.Join(dir, "x.cow")
	var o, e bytes.Buffer
	if code := run(t.Context(), []string{"create", "--source", src, "--target", tgt, "-o", cowPath}, &o, &e); code != 0 {
		t.Fatalf("create: exit %d: %s", code, e.String())
	}
	if code := run(t.Context(), []string{"verify", "--source", src, "--cow", cowPath, "--target", tgt}, &o, &e); code != 0 {
		t.Fatalf("verify: exit %d: %s", code, e.String())
	}
	// The source as the expected target: the first changed block differs.
	e.Reset()
	if code := run(t.Context(), []string{"verify", "--source", src, "--cow", cowPath, "--target", src}, &o, &e); code != 1 || !strings.Contains(e.String(), "first mismatch at block") {
		t.Fatalf("verify against the wrong image: exit %d: %s", code, e.String())
	}
	if code := run(t.Context(), []string{"apply", "--source", src, "--cow", cowPath}, &o, &e); code != 2 {
		t.Fatalf("apply without output: exit %d", code)
	}
}
