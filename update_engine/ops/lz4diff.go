package ops

import (
	"errors"
	"fmt"

	"github.com/vabc-go/vabc/update_engine/lz4diff"
	"github.com/vabc-go/vabc/update_engine/metadata"
)

// executeLz4diff applies LZ4DIFF_BSDIFF / LZ4DIFF_PUFFDIFF (spec §3.7): the
// source blocks are LZ4-decompressed, patched and re-compressed with
// liblz4's destSize algorithms (update_engine/liblz4).
func executeLz4diff(op *metadata.InstallOperation, blob []byte, env Env) error {
	if env.Source == nil {
		return errors.New("no source image")
	}
	bs := env.BlockSize
	n := ExtentBytes(op.SrcExtents, bs)
	if n > MaxDiffSource || (env.SourceSize > 0 && n > env.SourceSize) {
		return fmt.Errorf("diff op reads %d source bytes (source image %d bytes, limit %d)", n, env.SourceSize, int64(MaxDiffSource))
	}
	h, err := lz4diff.ParseHeader(blob)
	if err != nil {
		return err
	}
	want := lz4diff.InnerBsdiff
	if op.GetType() == metadata.InstallOperation_LZ4DIFF_PUFFDIFF {
		want = lz4diff.InnerPuffdiff
	}
	if h.Inner != want {
		return fmt.Errorf("%s operation with inner patch type %d", typeName(op.GetType()), int32(h.Inner))
	}
	old, err := ReadSource(op, env.Source, bs)
	if err != nil {
		return err
	}
	out, err := lz4diff.Apply(old, blob)
	if err != nil {
		return err
	}
	w := newExtentWriter(env.Target, op.DstExtents, bs)
	if int64(len(out)) > w.total {
		return fmt.Errorf("patch makes %d bytes, the destination is %d", len(out), w.total)
	}
	if _, err := w.Write(out); err != nil {
		return err
	}
	for w.written < w.total {
		k := min(w.total-w.written, int64(len(zeros)))
		if _, err := w.Write(zeros[:k]); err != nil {
			return err
		}
	}
	return nil
}
