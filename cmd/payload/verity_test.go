package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/cli"
	"github.com/vabc-go/vabc/snapuserd/merge"
	"github.com/vabc-go/vabc/testdata/imagegen"
)

// TestGenerateVerity: `generate --verity` (full and incremental) writes the
// extended images; `extract` reproduces the target ones (hash tree and FEC
// included), and `apply-cow` + an in-place merge (snapuserd/merge) does too,
// for COW v2 and v3.
func TestGenerateVerity(t *testing.T) {
	dir := t.TempDir()
	for _, k := range []imagegen.Kind{imagegen.Mixed, imagegen.Grow} {
		old, new, err := imagegen.Raw(k, 9, 48)
		if err != nil {
			t.Fatal(err)
		}
		if err := imagegen.WritePair(dir, string(k), old, new); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"full-v2", []string{"--cow-version", "2"}},
		{"full-v3", []string{"--cow-version", "3", "--compression-factor", "16K"}},
		{"inc-v2", []string{"--source", filepath.Join(dir, "old"), "--cow-version", "2"}},
		{"inc-v3", []string{"--source", filepath.Join(dir, "old"), "--cow-version", "3", "--compression-factor", "64K"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := t.TempDir()
			pl := filepath.Join(w, "payload.bin")
			vout := filepath.Join(w, "verity")
			args := append([]string{"--target", filepath.Join(dir, "new"), "-o", pl, "--threads", "2", "--chunk", "32K",
				"--vabc", "--verity", "--verity-out", vout, "--verity-seed", "s1", "--json"}, tc.extra...)
			out, err := runGen(t, args...)
			if err != nil {
				t.Fatalf("generate: %v\n%s", err, out)
			}
			var js struct {
				Verity bool `json:"verity"`
			}
			if err := json.Unmarshal([]byte(out), &js); err != nil || !js.Verity {
				t.Fatalf("--json: %v %s", err, out)
			}
			inc := tc.extra[0] == "--source"
			oldDir := filepath.Join(vout, "source")
			exArgs := []string{"extract", "-o", filepath.Join(w, "out"), pl}
			cowArgs := []string{"apply-cow", "-o", filepath.Join(w, "cow"), pl}
			if inc {
				exArgs = append(exArgs[:3:3], "--old", oldDir, pl)
				cowArgs = append(cowArgs[:3:3], "--old", oldDir, pl)
			}
			if o, e, err := runCmd(t, exArgs...); err != nil {
				t.Fatalf("extract: %v\n%s%s", err, o, e)
			}
			if o, e, err := runCmd(t, cowArgs...); err != nil {
				t.Fatalf("apply-cow: %v\n%s%s", err, o, e)
			}
			for _, k := range []imagegen.Kind{imagegen.Mixed, imagegen.Grow} {
				name := string(k)
				want, err := os.ReadFile(filepath.Join(vout, "target", name+".img"))
				if err != nil {
					t.Fatal(err)
				}
				data, _ := os.ReadFile(filepath.Join(dir, "new", name+".img"))
				if len(want) <= len(data) || !bytes.Equal(want[:len(data)], data) {
					t.Fatalf("%s: target image (%d bytes) is not the input (%d bytes) plus a verity region", name, len(want), len(data))
				}
				got, err := os.ReadFile(filepath.Join(w, "out", name+".img"))
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("%s: extracted image differs from the target (%v)", name, err)
				}
				// Merge the COW into a copy of the source in place.
				base := make([]byte, len(want))
				if inc {
					old, err := os.ReadFile(filepath.Join(oldDir, name+".img"))
					if err != nil {
						t.Fatal(err)
					}
					base = append(old, make([]byte, max(0, len(want)-len(old)))...)
				}
				bp := filepath.Join(w, name+".base")
				if err := os.WriteFile(bp, base, 0o644); err != nil {
					t.Fatal(err)
				}
				cp := filepath.Join(w, "cow", name+".cow")
				r, err := cow.Open(cp, nil)
				if err != nil {
					t.Fatal(err)
				}
				err = merge.MergeFiles(t.Context(), cp, bp, r, nil)
				r.Close()
				if err != nil {
					t.Fatalf("%s: merge: %v", name, err)
				}
				merged, _ := os.ReadFile(bp)
				if !bytes.Equal(merged[:len(want)], want) {
					t.Fatalf("%s: merged image differs from the target", name)
				}
			}
		})
	}
	for _, args := range [][]string{
		{"--target", dir, "-o", filepath.Join(t.TempDir(), "p"), "--verity"},
		{"--target", dir, "-o", filepath.Join(t.TempDir(), "p"), "--verity-out", t.TempDir()},
	} {
		if _, err := runGen(t, args...); err == nil {
			t.Errorf("%q accepted", args)
		} else if _, ok := err.(*cli.UsageError); !ok {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}
