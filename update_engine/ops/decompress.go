package ops

import (
	"bytes"
	"compress/bzip2"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/xzdec"
)

var zstdPool sync.Pool

// maxZstdWindow bounds the zstd window (and so memory per decoder).
const maxZstdWindow = 128 << 20

// Decompressor returns a reader of the decompressed blob of a REPLACE_*
// operation and a function that releases pooled state.
func Decompressor(t metadata.InstallOperation_Type, blob []byte) (io.Reader, func(), error) {
	nop := func() {}
	switch t {
	case metadata.InstallOperation_REPLACE:
		return bytes.NewReader(blob), nop, nil
	case metadata.InstallOperation_REPLACE_BZ:
		return bzip2.NewReader(bytes.NewReader(blob)), nop, nil
	case metadata.InstallOperation_REPLACE_XZ:
		r, err := xzdec.NewReader(blob)
		if err != nil {
			return nil, nop, err
		}
		return r, nop, nil
	case metadata.InstallOperation_REPLACE_ZSTD:
		d, _ := zstdPool.Get().(*zstd.Decoder)
		if d == nil {
			var err error
			d, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow))
			if err != nil {
				return nil, nop, err
			}
		}
		if err := d.Reset(bytes.NewReader(blob)); err != nil {
			zstdPool.Put(d)
			return nil, nop, fmt.Errorf("zstd: %w", err)
		}
		return d, func() { d.Reset(nil); zstdPool.Put(d) }, nil
	}
	return nil, nop, fmt.Errorf("%v is not a REPLACE operation", t)
}
