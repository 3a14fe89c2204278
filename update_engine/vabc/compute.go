package vabc

import (
	"context"
	"fmt"

	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/ops"
	"github.com/vabc-go/vabc/update_engine/payload"
)

// zeroChunk is the most blocks one zero action covers.
const zeroChunk = 1 << 14

// memTarget is an io.WriterAt over a byte slice.
type memTarget []byte

func (m memTarget) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, fmt.Errorf("write of %d bytes at %d outside the %d-byte buffer", len(p), off, len(m))
	}
	return copy(m[off:], p), nil
}

// expand lists the blocks of ext in order; holes are payload.SparseHole.
func expand(ext []*metadata.Extent) []uint64 {
	var out []uint64
	for _, e := range ext {
		for k := range e.GetNumBlocks() {
			if e.GetStartBlock() == payload.SparseHole {
				out = append(out, payload.SparseHole)
			} else {
				out = append(out, e.GetStartBlock()+k)
			}
		}
	}
	return out
}

// compute produces the COW actions of operation i: the new data comes from
// ops.Execute run against a buffer laid out as the concatenated destination
// extents.
func (pw *partWriter) compute(ctx context.Context, i int) ([]action, int64, error) {
	op := pw.pu.Operations[i]
	bs := pw.bs
	total := ops.ExtentBytes(op.DstExtents, bs)
	t := op.GetType()
	if t == metadata.InstallOperation_ZERO || t == metadata.InstallOperation_DISCARD {
		var acts []action
		for _, e := range op.DstExtents {
			// In pieces, so that cancellation (checked between actions)
			// is prompt even for a zero run of millions of blocks.
			for d, n := e.GetStartBlock(), e.GetNumBlocks(); d != payload.SparseHole && n > 0; {
				k := min(n, zeroChunk)
				acts = append(acts, action{kind: 'z', dst: d, n: k})
				d, n = d+k, n-k
			}
		}
		return acts, total, nil
	}
	if total > maxOpBuffer {
		return nil, 0, fmt.Errorf("destination of %d bytes exceeds the %d-byte per-operation buffer", total, maxOpBuffer)
	}
	blob, err := pw.p.Blob(op)
	if err != nil {
		return nil, 0, err
	}
	// Remap the destination onto [0, total) of a buffer; holes stay holes.
	var remap []*metadata.Extent
	var cur uint64
	for _, e := range op.DstExtents {
		if e.GetStartBlock() == payload.SparseHole {
			remap = append(remap, e)
			continue
		}
		start, n := cur, e.GetNumBlocks()
		remap = append(remap, &metadata.Extent{StartBlock: &start, NumBlocks: &n})
		cur += n
	}
	buf := make(memTarget, int64(cur)*bs)
	mop := &metadata.InstallOperation{
		Type: op.Type, DataOffset: op.DataOffset, DataLength: op.DataLength,
		SrcExtents: op.SrcExtents, SrcLength: op.SrcLength, DstExtents: remap, DstLength: op.DstLength,
		DataSha256Hash: op.DataSha256Hash, SrcSha256Hash: op.SrcSha256Hash,
	}
	env := ops.Env{BlockSize: bs, Target: ops.ContextWriterAt(ctx, buf), TargetZeroed: true, SourceSize: pw.srcSz}
	if pw.src != nil {
		env.Source = ops.ContextReaderAt(ctx, pw.src)
	}
	if err := ops.Execute(mop, blob, env); err != nil {
		return nil, 0, err
	}
	dst := expand(op.DstExtents)
	var src []uint64
	if t == metadata.InstallOperation_SOURCE_COPY {
		src = expand(op.SrcExtents)
		if len(src) != len(dst) {
			return nil, 0, fmt.Errorf("%d destination blocks but %d source blocks", len(dst), len(src))
		}
	}
	diff := t == metadata.InstallOperation_SOURCE_BSDIFF || t == metadata.InstallOperation_BROTLI_BSDIFF
	var acts []action
	addRaw := func(d uint64, data []byte) {
		if l := len(acts); l > 0 {
			a := &acts[l-1]
			if a.kind == 'r' && a.dst+uint64(len(a.data))/uint64(bs) == d && sameBacking(a.data, data) {
				a.data = a.data[:len(a.data)+len(data)]
				return
			}
		}
		acts = append(acts, action{kind: 'r', dst: d, data: data})
	}
	pos := int64(0) // offset in buf of the next non-hole block
	for k, d := range dst {
		if d == payload.SparseHole {
			continue
		}
		data := buf[pos : pos+bs : len(buf)]
		pos += bs
		switch {
		case src != nil:
			if src[k] == d || pw.plan.copied[d] {
				continue // in place, or written as a Copy op up front
			}
			addRaw(d, data)
		case diff:
			x, ok := pw.plan.xor[d]
			if !ok {
				addRaw(d, data)
				continue
			}
			xd, srcBlock, off, ok, err := pw.xorData(data, x)
			if err != nil {
				return nil, 0, err
			}
			if !ok {
				addRaw(d, data)
				continue
			}
			acts = append(acts, action{kind: 'x', dst: d, data: xd, src: srcBlock, off: off})
		default:
			addRaw(d, data)
		}
	}
	return acts, total, nil
}

// sameBacking reports whether b directly follows a in memory (both are
// windows of the same buffer).
func sameBacking(a, b []byte) bool {
	if cap(a)-len(a) < len(b) || len(b) == 0 {
		return false
	}
	return &a[:len(a)+1][len(a)] == &b[0]
}
