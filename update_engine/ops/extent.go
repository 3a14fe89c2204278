package ops

import (
	"fmt"
	"io"
	"math"

	"github.com/vabc-go/vabc/update_engine/metadata"
)

const sparseHole = math.MaxUint64

// ExtentBytes is the total byte length of extents.
func ExtentBytes(ext []*metadata.Extent, bs int64) int64 {
	var n int64
	for _, e := range ext {
		n += int64(e.GetNumBlocks()) * bs
	}
	return n
}

// extentWriter writes a byte stream across dst extents in order, filling each
// completely before the next (DirectExtentWriter). Bytes aimed at a sparse
// hole are dropped. Writing more than the extents hold is an error.
type extentWriter struct {
	w       io.WriterAt
	ext     []*metadata.Extent
	bs      int64
	i       int   // current extent
	off     int64 // bytes written into ext[i]
	written int64
	total   int64
}

func newExtentWriter(w io.WriterAt, ext []*metadata.Extent, bs int64) *extentWriter {
	return &extentWriter{w: w, ext: ext, bs: bs, total: ExtentBytes(ext, bs)}
}

func (e *extentWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if e.i >= len(e.ext) {
			return n, fmt.Errorf("output exceeds the %d-byte destination", e.total)
		}
		x := e.ext[e.i]
		size := int64(x.GetNumBlocks()) * e.bs
		k := min(int64(len(p)), size-e.off)
		if x.GetStartBlock() != sparseHole {
			if _, err := e.w.WriteAt(p[:k], int64(x.GetStartBlock())*e.bs+e.off); err != nil {
				return n, err
			}
		}
		p = p[k:]
		n += int(k)
		e.off += k
		e.written += k
		if e.off == size {
			e.i++
			e.off = 0
		}
	}
	return n, nil
}

// finish requires the destination to be filled exactly.
func (e *extentWriter) finish() error {
	if e.written != e.total {
		return fmt.Errorf("produced %d bytes, destination extents hold %d", e.written, e.total)
	}
	return nil
}

// extentReader reads the concatenation of src extents.
type extentReader struct {
	r   io.ReaderAt
	ext []*metadata.Extent
	bs  int64
	i   int
	off int64
}

func (e *extentReader) Read(p []byte) (int, error) {
	for e.i < len(e.ext) && e.off == int64(e.ext[e.i].GetNumBlocks())*e.bs {
		e.i++
		e.off = 0
	}
	if e.i >= len(e.ext) {
		return 0, io.EOF
	}
	x := e.ext[e.i]
	k := min(int64(len(p)), int64(x.GetNumBlocks())*e.bs-e.off)
	n, err := e.r.ReadAt(p[:k], int64(x.GetStartBlock())*e.bs+e.off)
	e.off += int64(n)
	if err == io.EOF && int64(n) == k {
		err = nil
	}
	if err == io.EOF {
		return n, fmt.Errorf("source ends before block %d+%d: %w", x.GetStartBlock(), e.off/e.bs, io.ErrUnexpectedEOF)
	}
	return n, err
}
