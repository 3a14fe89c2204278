package snapuserd

import (
	"io"
	"syscall"
	"unsafe"
)

const oDirect = syscall.O_DIRECT

// alignedReader serves ReadAt on an O_DIRECT file through a block-aligned
// bounce buffer (O_DIRECT needs aligned offsets, lengths and memory).
type alignedReader struct{ r io.ReaderAt }

func alignedBuf(n int) []byte {
	b := make([]byte, n+BlockSize)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (BlockSize - 1))
	if off != 0 {
		off = BlockSize - off
	}
	return b[off : off+n]
}

func (a *alignedReader) ReadAt(p []byte, off int64) (int, error) {
	start := off &^ (BlockSize - 1)
	end := (off + int64(len(p)) + BlockSize - 1) &^ (BlockSize - 1)
	buf := alignedBuf(int(end - start))
	n, err := a.r.ReadAt(buf, start)
	avail := max(0, n-int(off-start))
	c := copy(p, buf[min(int(off-start), n):][:min(avail, len(p))])
	if c < len(p) && err == nil {
		err = io.EOF
	}
	if c == len(p) {
		err = nil
	}
	return c, err
}
