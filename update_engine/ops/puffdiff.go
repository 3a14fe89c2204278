package ops

import (
	"errors"
	"fmt"

	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/puffin"
)

// executePuffdiff applies a PUFFDIFF operation (spec §3.5): the source blocks
// are puffed, the inner bsdiff patch runs between the puffed views, and the
// result is huffed back into the destination blocks.
func executePuffdiff(op *metadata.InstallOperation, blob []byte, env Env) error {
	if env.Source == nil {
		return errors.New("no source image")
	}
	bs := env.BlockSize
	n := ExtentBytes(op.SrcExtents, bs)
	if n > MaxDiffSource || (env.SourceSize > 0 && n > env.SourceSize) {
		return fmt.Errorf("diff op reads %d source bytes (source image %d bytes, limit %d)", n, env.SourceSize, int64(MaxDiffSource))
	}
	w := newExtentWriter(env.Target, op.DstExtents, bs)
	want := w.total
	if op.DstLength != nil {
		want = int64(op.GetDstLength())
	}
	if want > MaxDiffSource {
		return fmt.Errorf("diff op writes %d bytes (limit %d)", want, int64(MaxDiffSource))
	}
	// Check the patch before reading the source.
	if _, err := puffin.ParseHeader(blob); err != nil {
		return err
	}
	old, err := ReadSource(op, env.Source, bs)
	if err != nil {
		return err
	}
	out, err := puffin.Apply(old, blob, want, 0)
	if err != nil {
		return err
	}
	if _, err := w.Write(out); err != nil {
		return err
	}
	if w.written < w.total {
		_, err := w.Write(zeros[:w.total-w.written])
		return err
	}
	return nil
}
