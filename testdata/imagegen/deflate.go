package imagegen

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"fmt"
	"io"
)

// DeflateTrees returns an old and a new tree full of deflate data, the
// content of the partitions PUFFDIFF is for: zip archives (APK-like, several
// entries each) and gzip files. Between versions a few entries of most
// archives and most gzip files change by a few bytes, so their compressed
// bytes change from the edit on; the rest are unchanged.
func DeflateTrees(seed uint64, zips, gzips int) (old, new Tree) {
	r := newRand(seed, "deflate")
	for i := 0; i < zips; i++ {
		entries := 3 + r.IntN(5)
		var oe, ne [][]byte
		for k := 0; k < entries; k++ {
			d := make([]byte, 2000+r.IntN(40000))
			if k%2 == 0 {
				fillText(r, d)
			} else {
				fillSemi(r, d)
			}
			n := append([]byte(nil), d...)
			if r.IntN(3) != 0 {
				editBytes(r, n, 1+r.IntN(3))
			}
			oe, ne = append(oe, d), append(ne, n)
		}
		level := []int{6, 9, 1}[i%3]
		p := fmt.Sprintf("app/App%02d/App%02d.apk", i, i)
		old = append(old, File{Path: p, Data: zipOf(oe, level)})
		new = append(new, File{Path: p, Data: zipOf(ne, level)})
	}
	for i := 0; i < gzips; i++ {
		d := make([]byte, 4000+r.IntN(60000))
		fillText(r, d)
		n := append([]byte(nil), d...)
		if r.IntN(4) != 0 {
			editBytes(r, n, 1+r.IntN(2))
		}
		p := fmt.Sprintf("usr/share/doc/file%02d.gz", i)
		old = append(old, File{Path: p, Data: gzipOf(d)})
		new = append(new, File{Path: p, Data: gzipOf(n)})
	}
	return old, new
}

func zipOf(entries [][]byte, level int) []byte {
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	w.RegisterCompressor(zip.Deflate, func(out io.Writer) (io.WriteCloser, error) { return flate.NewWriter(out, level) })
	for k, e := range entries {
		f, _ := w.CreateHeader(&zip.FileHeader{Name: fmt.Sprintf("res/raw/r%02d.txt", k), Method: zip.Deflate})
		f.Write(e)
	}
	w.Close()
	return b.Bytes()
}

func gzipOf(d []byte) []byte {
	var b bytes.Buffer
	w, _ := gzip.NewWriterLevel(&b, 9)
	w.Write(d)
	w.Close()
	return b.Bytes()
}

// DeflatePair builds old and new ext4 images from DeflateTrees.
func DeflatePair(ctx context.Context, scratch string, seed uint64, zips, gzips int) (old, new []byte, err error) {
	ot, nt := DeflateTrees(seed, zips, gzips)
	size := max(ot.size(), nt.size())*3/2 + 2<<20
	size = (size + 1<<20 - 1) &^ (1<<20 - 1)
	if old, err = MakeExt4(ctx, scratch, ot, size); err != nil {
		return nil, nil, err
	}
	if new, err = MakeExt4(ctx, scratch, nt, size); err != nil {
		return nil, nil, err
	}
	return old, new, nil
}
