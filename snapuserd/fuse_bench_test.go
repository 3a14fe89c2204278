package snapuserd_test

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/kernel/fuse"
	"github.com/vabc-go/vabc/snapuserd/snapuserdtest"
)

// BenchmarkFuseRead reads a 32 MiB lz4 v3 snapshot through the FUSE export
// with sequential 4 KiB preads (the kernel's read-ahead turns them into
// large requests), dropping the file's page cache before every pass, beside
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
	run := func(b *testing.B, path string, drop bool) {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		p := make([]byte, 4096)
		b.SetBytes(int64(len(tr.Target)))
		for range b.N {
			if drop {
				unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
			}
			for off := int64(0); off < int64(len(tr.Target)); off += 4096 {
				if _, err := f.ReadAt(p, off); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("fuse-seq-4KiB", func(b *testing.B) { run(b, filepath.Join(dir, "mnt", "system"), true) })
	b.Run("raw-seq-4KiB", func(b *testing.B) { run(b, target, false) })
}
