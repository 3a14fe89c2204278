package snapuserd_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/kernel/fuse"
	"github.com/vabc-go/vabc/snapuserd/snapuserdtest"
)

// BenchmarkFuseRead reads a 32 MiB lz4 v3 snapshot through the FUSE export
// with sequential 4 KiB preads (the kernel's 128 KiB read-ahead turns them
// into larger requests) and 1 MiB preads (1 MiB requests), dropping the file's page cache before every pass, beside
// the same reads of the target image from the page cache. Needs root and
// /dev/fuse.
func BenchmarkFuseRead(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		b.Skip("no /dev/fuse")
	}
	tr := snapuserdtest.GenTriple(b, snapuserdtest.TripleSpec{Version: 3, Comp: cow.CompressionLz4, Factor: 64 << 10, Blocks: 8192, Seed: 5})
	s := snapshotOf(b, tr)
	dir := b.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "mnt"), 0o755); err != nil {
		b.Fatal(err)
	}
	exp, err := fuse.Mount(filepath.Join(dir, "mnt"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer exp.Unmount()
	if err := exp.Add("system", s, s.Size()); err != nil {
		b.Fatal(err)
	}
	target := filepath.Join(dir, "target.img")
	if err := os.WriteFile(target, tr.Target, 0o644); err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, path string, drop bool, size int) {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		p := make([]byte, size)
		b.SetBytes(int64(len(tr.Target)))
		for range b.N {
			if drop {
				unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
			}
			for off := int64(0); off < int64(len(tr.Target)); off += int64(size) {
				if _, err := f.ReadAt(p, off); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	for _, size := range []int{4 << 10, 1 << 20} {
		name := fmt.Sprintf("%dKiB", size>>10)
		b.Run("fuse-seq-"+name, func(b *testing.B) { run(b, filepath.Join(dir, "mnt", "system"), true, size) })
		b.Run("raw-seq-"+name, func(b *testing.B) { run(b, target, false, size) })
	}
}
