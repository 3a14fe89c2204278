package merge

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
)

func TestIOURing(t *testing.T) {
	tests := []struct {
		name    string
		failAt  int  // fail the n-th io_uring batch (1-based), 0 = never
		read    bool // of reads (read-ahead), else of writes
		wantErr bool
	}{
		{"io_uring", 0, false, false},
		{"fallback after write failure", 3, false, true},
		{"pread after read failure", 2, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := generate(t, genConfig{seed: 81, blocks: 3000, version: 3, scratch: true, real: true, comp: cow.CompressionLz4})
			dir := t.TempDir()
			cowPath, basePath := filepath.Join(dir, "c.cow"), filepath.Join(dir, "b.img")
			if err := os.WriteFile(cowPath, img.cowImg, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(basePath, img.base, 0o644); err != nil {
				t.Fatal(err)
			}
			var batches atomic.Int64
			if tc.failAt > 0 {
				testURingFault = func(read bool) bool { return read == tc.read && batches.Add(1) == int64(tc.failAt) }
				defer func() { testURingFault = nil }()
			}
			cf, err := faultfs.Open(cowPath)
			if err != nil {
				t.Fatal(err)
			}
			defer cf.Close()
			bf, err := faultfs.Open(basePath)
			if err != nil {
				t.Fatal(err)
			}
			defer bf.Close()
			e, err := New(cf, bf, img.source, &Options{IOUring: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			writes, fallback := e.IOURing()
			if fallback != nil && (errors.Is(fallback, syscall.ENOSYS) || errors.Is(fallback, syscall.EPERM)) {
				t.Skipf("io_uring unavailable: %v", fallback)
			}
			reads := e.IOURingReads()
			if (fallback != nil) != tc.wantErr || writes == 0 || reads == 0 {
				t.Fatalf("io_uring writes %d, reads %d, fallback %v", writes, reads, fallback)
			}
			t.Logf("%d writes and %d reads through io_uring, fallback: %v", writes, reads, fallback)
			got, err := os.ReadFile(basePath)
			if err != nil {
				t.Fatal(err)
			}
			if d := diffBlocks(got, img.target); d != "" {
				t.Fatal(d)
			}
		})
	}
	// Not an OS file: io_uring is declined, the merge is synchronous.
	img := generate(t, genConfig{seed: 82, blocks: 800, version: 2, scratch: true})
	cf, bf := img.files()
	e, err := New(cf, bf, img.source, &Options{IOUring: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w, fb := e.IOURing(); w != 0 || fb == nil || e.IOURingReads() != 0 {
		t.Fatalf("io_uring on a MemFile: %d writes, %d reads, %v", w, e.IOURingReads(), fb)
	}
}
