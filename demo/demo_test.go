package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vabc-go/vabc/internal/cli"
)

// buildTools builds ./cmd/... into a temporary directory.
func buildTools(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not in PATH")
	}
	cmd := exec.Command(goTool, "build", "-o", dir+string(filepath.Separator), "./cmd/...")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/...: %v\n%s", err, out)
	}
	return dir
}

// TestDemo runs the demo the way make demo does, on a small image, with
// each frontend this host offers: the emulated dm-user always, FUSE when
// it works here. Each run must kill the daemon mid-merge and end verified.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and runs the whole OTA flow (a few seconds)")
	}
	bin := buildTools(t)
	frontends := []string{"emulated"}
	if fuseUsable() == "" {
		frontends = append(frontends, "fuse")
	}
	for _, fe := range frontends {
		t.Run(fe, func(t *testing.T) {
			work := t.TempDir()
			var out, errb bytes.Buffer
			err := run(t.Context(), []string{"-bin", bin, "-work", work, "-frontend", fe, "-files", "40"}, &out, &errb)
			if err != nil {
				t.Fatalf("demo: %v\n%s%s", err, out.String(), errb.String())
			}
			for _, want := range []string{
				"$ payload generate", "payload signature:  ok", "$ payload apply-cow", "hash ok",
				"$ cowctl inspect", "byte for byte the new image", "kill -9 snapuserd at merge_percent",
				"on disk in the COW header: num_merge_ops", "system: snapshot-merge-complete",
				"base_system.img == new/system.img", "==> report", "demo: OK",
			} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("demo output lacks %q:\n%s", want, out.String())
				}
			}
			if fe == "fuse" && !strings.Contains(out.String(), "over the half-merged base is still byte for byte the new image") {
				t.Errorf("FUSE run did not read the snapshot after the restart:\n%s", out.String())
			}
			if mounted(filepath.Join(work, "mnt")) {
				t.Errorf("the FUSE export is still mounted after the demo")
			}
			if testing.Verbose() {
				t.Log(out.String())
			}
		})
	}
}

func TestSameImage(t *testing.T) {
	a := make([]byte, 3*4096)
	b := bytes.Clone(a)
	if err := sameImage(a, b); err != nil {
		t.Fatal(err)
	}
	b[2*4096+7] = 1
	if err := sameImage(a, b); err == nil || !strings.Contains(err.Error(), "block 2 (byte 0x2000)") {
		t.Errorf("sameImage with block 2 changed: %v", err)
	}
	if err := sameImage(a, a[:4096]); err == nil {
		t.Error("sameImage accepted images of different sizes")
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{"-frontend", "dm"}, {"-files", "1"}, {"extra"}, {"-nope"}} {
		var out, errb bytes.Buffer
		if err := run(t.Context(), args, &out, &errb); !cli.IsUsage(err) {
			t.Errorf("run %q: %v, want a usage error", args, err)
		}
	}
	var out, errb bytes.Buffer
	if err := run(t.Context(), []string{"-bin", t.TempDir()}, &out, &errb); err == nil || !strings.Contains(err.Error(), "payload not found") {
		t.Errorf("run with an empty -bin: %v", err)
	}
}
