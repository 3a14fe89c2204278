package imagegen

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
)

// MakeErofs builds an EROFS image from tree t with mkfs.erofs (erofs-utils),
// passing opts (e.g. "-zlz4hc", "-zlz4hc,6", "-C16384") before the fixed
// ones that make the output reproducible: build time, UUID, root ownership,
// no host xattrs. scratch is a temporary directory the caller owns.
func MakeErofs(ctx context.Context, scratch string, t Tree, opts ...string) ([]byte, error) {
	mkfs, err := exec.LookPath("mkfs.erofs")
	if err != nil {
		return nil, fmt.Errorf("imagegen: mkfs.erofs not installed (apt-get install erofs-utils): %w", err)
	}
	root, img, done, err := stageTree(scratch, t)
	if err != nil {
		return nil, err
	}
	defer done()
	args := append(append([]string{}, opts...), fmt.Sprintf("-T%d", fixedTime), "-U", fixedUUID, "--all-root", "-x-1", "--quiet", img, root)
	if out, err := exec.CommandContext(ctx, mkfs, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("imagegen: mkfs.erofs %v: %v: %s", args, err, out)
	}
	return os.ReadFile(img)
}

// ErofsTrees returns an old tree of files compressed images hold (text and
// semi-compressible data, a few random files) and a new one in which edits
// of them got a few bytes changed and a short run inserted: their compressed
// form differs from the insertion on, because every later cluster boundary
// moves.
func ErofsTrees(seed uint64, files, maxFile, edits int) (old, new Tree) {
	r := newRand(seed, "erofs")
	dirs := []string{"bin", "lib64", "etc", "app/Settings", "framework"}
	for i := 0; i < files; i++ {
		data := make([]byte, r.IntN(maxFile)+1)
		switch {
		case i%8 == 7:
			fillRandom(r, data)
		case i%2 == 0:
			fillText(r, data)
		default:
			fillSemi(r, data)
		}
		old = append(old, File{Path: fmt.Sprintf("%s/file%03d", dirs[r.IntN(len(dirs))], i), Data: data})
	}
	new = append(Tree(nil), old...)
	for _, i := range r.Perm(files)[:min(edits, files)] {
		d := append([]byte(nil), new[i].Data...)
		editBytes(r, d, 1+r.IntN(3))
		at := r.IntN(len(d) + 1)
		ins := make([]byte, 1+r.IntN(200))
		fillText(r, ins)
		d = append(d[:at:at], append(ins, d[at:]...)...)
		new[i] = File{Path: new[i].Path, Data: d}
	}
	return old, new
}

// ErofsPair builds old and new EROFS images (mkfs.erofs with opts) from
// ErofsTrees.
func ErofsPair(ctx context.Context, scratch string, seed uint64, files, maxFile, edits int, opts ...string) (old, new []byte, err error) {
	ot, nt := ErofsTrees(seed, files, maxFile, edits)
	if old, err = MakeErofs(ctx, scratch, ot, opts...); err != nil {
		return nil, nil, err
	}
	if new, err = MakeErofs(ctx, scratch, nt, opts...); err != nil {
		return nil, nil, err
	}
	return old, new, nil
}

// ApkTrees returns old and new trees of APK-like zips as EROFS partitions
// hold them: each has a large stored entry (uncompressed resources, which
// LZ4 compresses) and deflated ones; between versions a few bytes of some
// deflated entries change.
func ApkTrees(seed uint64, apks int) (old, new Tree) {
	r := newRand(seed, "apk")
	for i := 0; i < apks; i++ {
		var oe, ne []zipEntry
		for k := 0; k < 4; k++ {
			d := make([]byte, 4000+r.IntN(20000))
			method := zip.Deflate
			if k == 0 {
				d = make([]byte, 40000+r.IntN(40000))
				method = zip.Store
			}
			fillText(r, d)
			n := append([]byte(nil), d...)
			if k > 0 && r.IntN(2) == 0 {
				editBytes(r, n, 1+r.IntN(3))
			}
			oe = append(oe, zipEntry{d, method})
			ne = append(ne, zipEntry{n, method})
		}
		p := fmt.Sprintf("app/App%02d/App%02d.apk", i, i)
		old = append(old, File{Path: p, Data: zipEntries(oe)})
		new = append(new, File{Path: p, Data: zipEntries(ne)})
	}
	return old, new
}

type zipEntry struct {
	data   []byte
	method uint16
}

func zipEntries(entries []zipEntry) []byte {
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	for k, e := range entries {
		f, _ := w.CreateHeader(&zip.FileHeader{Name: fmt.Sprintf("res/r%02d", k), Method: e.method})
		f.Write(e.data)
	}
	w.Close()
	return b.Bytes()
}
