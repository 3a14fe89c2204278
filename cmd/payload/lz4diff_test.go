package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
	"github.com/vabc-go/vabc/internal/testtool"
	"github.com/vabc-go/vabc/snapuserd/merge"
	"github.com/vabc-go/vabc/testdata/imagegen"
	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/payload"
)

// mergeInto merges the COW at cowPath into a copy of old with snapuserd's
// merge engine (what `cowctl apply` does) and returns the first size bytes.
func mergeInto(t *testing.T, old []byte, cowPath string, size int) []byte {
	t.Helper()
	base := filepath.Join(t.TempDir(), "base.img")
	img := make([]byte, max(len(old), size))
	copy(img, old)
	if err := os.WriteFile(base, img, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := cow.Open(cowPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cf, err := faultfs.Open(cowPath)
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	bf, err := faultfs.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	e, err := merge.New(cf, bf, r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Run(t.Context()); err != nil {
		t.Fatalf("merge: %v", err)
	}
	got, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	return got[:size]
}

// TestGenerateLZ4DiffErofs: `payload generate --lz4diff` between two EROFS
// lz4hc images (mkfs.erofs) emits LZ4DIFF operations and a smaller payload
// than without, and both `payload extract` and `payload apply-cow` followed
// by a merge reproduce the exact target image.
func TestGenerateLZ4DiffErofs(t *testing.T) {
	testtool.Need(t, "mkfs.erofs")
	old, nw, err := imagegen.ErofsPair(t.Context(), t.TempDir(), 11, 32, 128<<10, 10, "-zlz4hc")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := imagegen.WritePair(dir, "system", old, nw); err != nil {
		t.Fatal(err)
	}
	oldDir, newDir := filepath.Join(dir, "old"), filepath.Join(dir, "new")
	sizes := map[bool]int64{}
	for _, on := range []bool{false, true} {
		w := t.TempDir()
		pl := filepath.Join(w, "payload.bin")
		args := []string{"--source", oldDir, "--target", newDir, "-o", pl, "--threads", "2", "--vabc", "--cow-version", "3"}
		if on {
			args = append(args, "--lz4diff")
		}
		if out, err := runGen(t, args...); err != nil {
			t.Fatalf("generate: %v\n%s", err, out)
		}
		p, err := payload.Open(pl)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, op := range p.Partition("system").Operations {
			if tp := op.GetType(); tp == metadata.InstallOperation_LZ4DIFF_BSDIFF || tp == metadata.InstallOperation_LZ4DIFF_PUFFDIFF {
				n++
			}
		}
		p.Close()
		if on != (n > 0) {
			t.Fatalf("--lz4diff=%v: %d LZ4DIFF operations", on, n)
		}
		st, _ := os.Stat(pl)
		sizes[on] = st.Size()
		ext := filepath.Join(w, "out")
		start := time.Now()
		if o, e, err := runCmd(t, "extract", "-o", ext, "--old", oldDir, pl); err != nil {
			t.Fatalf("extract: %v\n%s%s", err, o, e)
		}
		el := time.Since(start)
		if got, _ := os.ReadFile(filepath.Join(ext, "system.img")); !bytes.Equal(got, nw) {
			t.Fatalf("--lz4diff=%v: extract does not reproduce the target", on)
		}
		cows := filepath.Join(w, "cow")
		if o, e, err := runCmd(t, "apply-cow", "--old", oldDir, "-o", cows, pl); err != nil {
			t.Fatalf("apply-cow: %v\n%s%s", err, o, e)
		}
		if got := mergeInto(t, old, filepath.Join(cows, "system.cow"), len(nw)); !bytes.Equal(got, nw) {
			t.Fatalf("--lz4diff=%v: old + COW merged differs from the target", on)
		}
		t.Logf("--lz4diff=%v: payload %d bytes, %d LZ4DIFF ops, extract of %d bytes in %v", on, sizes[on], n, len(nw), el)
	}
	for _, bad := range [][]string{{"--minor", "8"}, {"--erofs-compression", "lz4hc,13"}, {"--erofs-compression", "zstd"}} {
		args := append([]string{"--source", oldDir, "--target", newDir, "-o", filepath.Join(t.TempDir(), "p.bin"), "--lz4diff"}, bad...)
		if out, err := runGen(t, args...); err == nil {
			t.Errorf("generate --lz4diff %v succeeded:\n%s", bad, out)
		}
	}
	if sizes[true] >= sizes[false] {
		t.Fatalf("payload with --lz4diff %d bytes, without %d", sizes[true], sizes[false])
	}
}
