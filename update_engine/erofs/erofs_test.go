package erofs

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vabc-go/vabc/internal/testtool"
)

// tree writes a directory of compressible text files, one incompressible
// file, small and empty files and a subdirectory, and returns their
// contents by path.
func tree(t *testing.T, seed uint64) (string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(seed, 1))
	words := make([]string, 400)
	for i := range words {
		w := make([]byte, 2+r.IntN(7))
		for j := range w {
			w[j] = byte('a' + r.IntN(12))
		}
		words[i] = string(w)
	}
	text := func(n int) []byte {
		var b bytes.Buffer
		for b.Len() < n {
			b.WriteString(words[r.IntN(len(words))])
			b.WriteByte(" \n"[r.IntN(2)])
		}
		return b.Bytes()[:n]
	}
	files := map[string][]byte{
		"a.txt":          text(100 << 10),
		"b.txt":          text(12345),
		"c/d.txt":        text(300 << 10),
		"c/e/small":      []byte("hello"),
		"c/e/empty":      nil,
		"c/tail.txt":     text(4096*3 + 100),
		"c/exact.txt":    text(4096 * 2),
		"zz-random.bin":  nil,
		"c/e/random.bin": nil,
	}
	rnd := make([]byte, 20000)
	for i := range rnd {
		rnd[i] = byte(r.Uint32())
	}
	files["zz-random.bin"] = rnd
	files["c/e/random.bin"] = append(text(9000), rnd[:7000]...)
	// runs of uncompressed lclusters between compressed ones: one-block
	// pclusters next to big ones in the same index pack
	var mixed []byte
	big := make([]byte, 1<<16)
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	for i := 0; i < 6; i++ {
		mixed = append(mixed, big[i*1000:i*1000+4096*(5+i%3)+i*100]...)
		mixed = append(mixed, text(5000+3000*i)...)
	}
	files["c/mixed.bin"] = mixed
	for p, b := range files {
		f := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, files
}

func mkfs(t *testing.T, dir string, opts ...string) []byte {
	t.Helper()
	bin := testtool.Need(t, "mkfs.erofs")
	img := filepath.Join(t.TempDir(), "img")
	args := append([]string{"-T0", "-U", "6a1e3a55-0000-4000-8000-000000000001", "--all-root", "--quiet"}, opts...)
	args = append(args, img, dir)
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.erofs %v: %v\n%s", args, err, out)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReadBackMkfs: images written by mkfs.erofs with every index format
// and pcluster layout it has (compact 4B/2B indexes, legacy full indexes,
// big pclusters, tail packing, lz4 and lz4hc) list every file, and
// decompressing each file through Extents gives back its exact contents.
func TestReadBackMkfs(t *testing.T) {
	dir, files := tree(t, 7)
	cases := map[string][]string{
		"lz4hc":             {"-zlz4hc"},
		"lz4hc-12":          {"-zlz4hc,12"},
		"lz4":               {"-zlz4"},
		"legacy":            {"-zlz4hc", "-Elegacy-compress"},
		"bigpcluster":       {"-zlz4hc", "-C16384"},
		"bigpcluster-large": {"-zlz4hc", "-C65536"},
		"legacy-big":        {"-zlz4hc", "-C16384", "-Elegacy-compress"},
		"ztailpacking":      {"-zlz4hc", "-Eztailpacking"},
		"extended-inodes":   {"-zlz4hc", "-Eforce-inode-extended"},
		"uncompressed":      nil,
		"noinline":          {"-Enoinline_data"},
		"chunked":           {"--chunksize=8192"},
	}
	for name, opts := range cases {
		t.Run(name, func(t *testing.T) {
			img := mkfs(t, dir, opts...)
			fs, err := Open(bytes.NewReader(img), int64(len(img)))
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			compressed, extents, inline := 0, 0, 0
			err = fs.Walk(func(f File) error {
				if f.Type != TypeRegular {
					return nil
				}
				want, ok := files[f.Path]
				if !ok {
					t.Errorf("unexpected file %s", f.Path)
					return nil
				}
				seen[f.Path] = true
				got, err := fs.ReadFile(f.Inode, 1<<30)
				if err != nil {
					return err
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s: read %d bytes, want %d (contents differ)", f.Path, len(got), len(want))
				}
				if f.Inode.Compressed() {
					compressed++
					exts, err := fs.Extents(f.Inode)
					if err != nil {
						return err
					}
					extents += len(exts)
					for _, e := range exts {
						if e.Inline {
							inline++
							continue
						}
						if e.Physical%fs.BlockSize() != 0 || e.PhysLen%fs.BlockSize() != 0 {
							t.Errorf("%s: extent %+v not block aligned", f.Path, e)
						}
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(seen) != len(files) {
				t.Errorf("walk found %d of %d files", len(seen), len(files))
			}
			if len(opts) > 0 && opts[0][:2] == "-z" && compressed == 0 {
				t.Error("no compressed file in a compressed image")
			}
			if name == "ztailpacking" && inline == 0 {
				t.Error("no inline pcluster with -Eztailpacking")
			}
			t.Logf("%d compressed files, %d extents (%d inline), zero padding %v", compressed, extents, inline, fs.ZeroPadding())
		})
	}
}

// TestBigPclusterExtents: with -C16384 a 300 KiB text file is stored in
// pclusters of up to 4 blocks, and the listed extents tile the file.
func TestBigPclusterExtents(t *testing.T) {
	dir, files := tree(t, 3)
	img := mkfs(t, dir, "-zlz4hc", "-C16384")
	fs, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	multi := 0
	err = fs.Walk(func(f File) error {
		if f.Path != "c/d.txt" {
			return nil
		}
		exts, err := fs.Extents(f.Inode)
		if err != nil {
			return err
		}
		var next uint64
		for _, e := range exts {
			if e.Logical != next {
				t.Fatalf("extent at %d, want %d", e.Logical, next)
			}
			next += e.LogicalLen
			if e.PhysLen > 4096 {
				multi++
			}
			if e.PhysLen > 16384 {
				t.Fatalf("pcluster of %d bytes with -C16384", e.PhysLen)
			}
		}
		if next != uint64(len(files[f.Path])) {
			t.Fatalf("extents cover %d of %d bytes", next, len(files[f.Path]))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if multi == 0 {
		t.Fatal("no multi-block pcluster with -C16384")
	}
}

// TestCorruptImages: damaged images give ErrFormat errors naming an offset,
// never a panic.
func TestCorruptImages(t *testing.T) {
	dir, _ := tree(t, 5)
	img := mkfs(t, dir, "-zlz4hc", "-C16384")
	if _, err := Open(bytes.NewReader(img[:2000]), 2000); !errors.Is(err, ErrFormat) {
		t.Fatalf("truncated superblock: %v", err)
	}
	bad := bytes.Clone(img)
	bad[SuperOffset] ^= 1
	if _, err := Open(bytes.NewReader(bad), int64(len(bad))); !errors.Is(err, ErrFormat) {
		t.Fatalf("bad magic: %v", err)
	}
	// Truncate the image after the metadata: file data lies outside it.
	fs, err := Open(bytes.NewReader(img[:8192]), int64(len(img)))
	if err == nil {
		err = fs.Walk(func(f File) error {
			if f.Type == TypeRegular {
				_, err := fs.ReadFile(f.Inode, 1<<30)
				return err
			}
			return nil
		})
	}
	if err == nil {
		t.Fatal("reading files of a truncated image succeeded")
	}
	t.Log(err)
	// Flip every byte of the metadata in turn.
	for i := 1024; i < min(len(img), 3*4096); i += 7 {
		b := bytes.Clone(img)
		b[i] ^= 0x5a
		walkAll(b)
	}
}

// walkAll opens, walks and reads everything (each inode once), returning
// the first error.
func walkAll(img []byte) error {
	fs, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		return err
	}
	read := map[uint64]bool{}
	return fs.Walk(func(f File) error {
		if (f.Type == TypeRegular || f.Type == TypeSymlink) && !read[f.Inode.Nid] {
			read[f.Inode.Nid] = true
			if _, err := fs.Extents(f.Inode); err != nil {
				return err
			}
			_, err := fs.ReadFile(f.Inode, 1<<24)
			return err
		}
		return nil
	})
}

// FuzzImage: any image opens, walks and reads without panicking or
// allocating without bound (seeds in testdata/fuzz/FuzzImage are small
// mkfs.erofs images: lz4hc compact indexes, legacy indexes with big
// pclusters, lz4 with tail packing).
func FuzzImage(f *testing.F) {
	f.Fuzz(func(t *testing.T, img []byte) {
		walkAll(img)
	})
}
