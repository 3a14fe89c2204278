package ops

import (
	"context"
	"io"
)

// ContextWriterAt wraps w so that writes fail once ctx ends. Execute writes
// in chunks of at most 1 MiB, so an operation with a large destination (a
// decompression bomb in a REPLACE_XZ blob, say) stops within one chunk.
func ContextWriterAt(ctx context.Context, w io.WriterAt) io.WriterAt { return ctxWriterAt{ctx, w} }

type ctxWriterAt struct {
	ctx context.Context
	w   io.WriterAt
}

func (c ctxWriterAt) WriteAt(p []byte, off int64) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.WriteAt(p, off)
}

// ContextReaderAt wraps r so that reads fail once ctx ends.
func ContextReaderAt(ctx context.Context, r io.ReaderAt) io.ReaderAt { return ctxReaderAt{ctx, r} }

type ctxReaderAt struct {
	ctx context.Context
	r   io.ReaderAt
}

func (c ctxReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.ReadAt(p, off)
}
