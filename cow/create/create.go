package create

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/vabc-go/vabc/cow"
)

// CowOptions choose the COW file written by Build and Estimate.
type CowOptions struct {
	// Version is the COW major version, 2 or 3 (default 3, as create_snapshot).
	Version int
	// Writer is passed to cow.NewWriterV2/V3. MaxBlocks and (v3) OpCountMax
	// are filled in from the plan; the block size must match the analysis.
	Writer cow.WriterOptions
}

// Result describes a written (or estimated) COW.
type Result struct {
	Plan *Plan
	// Size is the COW file size in bytes.
	Size int64
	// OpCounts counts the COW's data ops per type name ("copy", "replace",
	// …), as the reader sees them (a multi-block Replace op counts once;
	// metadata ops are not counted).
	OpCounts map[string]uint64
}

// opCountMax is the exact number of ops Emit produces for p: one per
// Copy/Xor/Zero block, and for Replace runs (cut at maxRunBlocks) the v3
// writer's greedy split into power-of-two units of at most factor bytes
// (cow-format.md §3.5).
func opCountMax(p *Plan, factor uint32) uint64 {
	fb := uint64(max(factor/uint32(p.BlockSize), 1))
	var n uint64
	for t := 0; t < len(p.Blocks); {
		switch p.Blocks[t].Kind {
		case KindUnchanged:
			t++
			continue
		case KindReplace:
		default:
			n++
			t++
			continue
		}
		e := t + 1
		for e < len(p.Blocks) && e-t < maxRunBlocks && p.Blocks[e].Kind == KindReplace {
			e++
		}
		for rem := uint64(e - t); rem > 0; {
			f := fb
			for f > rem {
				f >>= 1
			}
			rem -= f
			n++
		}
		t = e
	}
	return n
}

// ErrXorNeedsScratch: Xor ops at the same offset read their own
// destination block, so an interrupted merge can only be replayed from the
// scratch region's copy (cow-format.md §5); a COW without scratch must not
// carry them.
var ErrXorNeedsScratch = errors.New("create: Xor ops need the scratch region (an interrupted merge without it would re-apply an Xor over merged data)")

func newWriter(f cow.File, p *Plan, opts CowOptions) (cow.Writer, error) {
	wo := opts.Writer
	if wo.NoScratch && p.Stats.Xor > 0 {
		return nil, ErrXorNeedsScratch
	}
	wo.BlockSize = uint32(p.BlockSize)
	wo.MaxBlocks = p.TargetBlocks()
	switch opts.Version {
	case 2:
		if wo.CompressionFactor != 0 && wo.CompressionFactor != wo.BlockSize {
			return nil, fmt.Errorf("create: COW v2 compresses one block per op; compression factor %d needs --cow-version 3", wo.CompressionFactor)
		}
		return cow.NewWriterV2(f, wo)
	case 0, 3:
		factor := wo.CompressionFactor
		if factor == 0 {
			factor = wo.BlockSize
		}
		wo.OpCountMax = max(opCountMax(p, factor), 1)
		return cow.NewWriterV3(f, wo)
	}
	return nil, fmt.Errorf("create: unsupported COW version %d (want 2 or 3)", opts.Version)
}

// Build analyses src and tgt, writes the COW to path and checks the result
// before keeping it: the file is written under a temporary name, re-opened
// with the reader, its merge order checked with VerifyMergeOps and compared
// with the plan, and only then renamed to path. On any failure no file is
// left at path.
func Build(ctx context.Context, src, tgt Image, path string, aopts Options, copts CowOptions, emitProgress func(done, total int64)) (*Result, error) {
	aopts.BlockSize = int(copts.Writer.BlockSize)
	p, err := Analyze(ctx, src, tgt, aopts)
	if err != nil {
		return nil, err
	}
	return Write(ctx, p, src, tgt, path, copts, emitProgress)
}

// Write writes an analysed plan to path (see Build).
func Write(ctx context.Context, p *Plan, src, tgt Image, path string, copts CowOptions, progress func(done, total int64)) (res *Result, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	copts.Writer.Path = path
	w, err := newWriter(tmp, p, copts)
	if err != nil {
		return nil, err
	}
	if err := Emit(ctx, p, src, tgt, w, progress); err != nil {
		w.Close()
		return nil, err
	}
	if err := w.Finalize(); err != nil {
		w.Close()
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	res, err = check(tmp, p, path)
	if err != nil {
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return res, nil
}

// check re-opens the written COW and refuses it unless the merge order is
// safe and matches the plan.
func check(f *os.File, p *Plan, path string) (*Result, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	r, err := cow.NewReader(f, st.Size(), &cow.ReaderOptions{Path: path})
	if err != nil {
		return nil, fmt.Errorf("create: written COW does not parse: %w", err)
	}
	if err := r.VerifyMergeOps(); err != nil {
		return nil, fmt.Errorf("create: refusing unsafe COW: %w", err)
	}
	mo := r.MergeOrder()
	if len(mo) < len(p.Order) {
		return nil, fmt.Errorf("create: written COW has %d merge ops, plan has %d ordered ops", len(mo), len(p.Order))
	}
	for i, b := range p.Order {
		if mo[i].NewBlock != uint64(b) || !mo[i].Type.IsOrdered() {
			return nil, fmt.Errorf("create: merge step %d of the written COW is %s, plan says block %d", i, mo[i], b)
		}
	}
	return &Result{Plan: p, Size: st.Size(), OpCounts: countOps(r.Ops())}, nil
}

func countOps(ops []cow.Op) map[string]uint64 {
	m := map[string]uint64{}
	for _, op := range ops {
		if op.Type.IsMetadata() {
			continue
		}
		m[op.Type.String()]++
	}
	return m
}

// Estimate predicts the COW size and op counts for p without writing a
// file: the writer runs (compressing everything, so the size is exact) over
// a sink that only records how far it was written.
func Estimate(ctx context.Context, p *Plan, src, tgt Image, copts CowOptions, progress func(done, total int64)) (*Result, error) {
	var s sink
	counter := &countingWriter{}
	w, err := newWriter(&s, p, copts)
	if err != nil {
		return nil, err
	}
	counter.Writer = w
	if err := Emit(ctx, p, src, tgt, counter, progress); err != nil {
		w.Close()
		return nil, err
	}
	if err := w.Finalize(); err != nil {
		w.Close()
		return nil, err
	}
	size := w.Size()
	if err := w.Close(); err != nil {
		return nil, err
	}
	return &Result{Plan: p, Size: size, OpCounts: counter.counts(p, copts)}, nil
}

// countingWriter forwards to a cow.Writer; its counts mirror what the
// reader would report for the written file.
type countingWriter struct {
	cow.Writer
	seqEntries int
}

func (c *countingWriter) AddSequenceData(seq []uint32) error {
	c.seqEntries += len(seq)
	return c.Writer.AddSequenceData(seq)
}

func (c *countingWriter) counts(p *Plan, copts CowOptions) map[string]uint64 {
	m := map[string]uint64{}
	add := func(k string, n uint64) {
		if n > 0 {
			m[k] += n
		}
	}
	add("copy", p.Stats.Copy)
	add("xor", p.Stats.Xor)
	add("zero", p.Stats.Zero)
	factor := copts.Writer.CompressionFactor
	if copts.Version == 2 || factor == 0 {
		factor = uint32(p.BlockSize)
	}
	add("replace", opCountMax(p, factor)-p.Stats.Copy-p.Stats.Xor-p.Stats.Zero)
	return m
}

// sink is a cow.File that keeps nothing but the size.
type sink struct{ size int64 }

func (s *sink) WriteAt(p []byte, off int64) (int, error) {
	s.size = max(s.size, off+int64(len(p)))
	return len(p), nil
}

func (s *sink) ReadAt(p []byte, off int64) (int, error) {
	return 0, errors.New("create: estimate sink cannot be read back")
}

func (s *sink) Sync() error { return nil }

func (s *sink) Truncate(size int64) error { s.size = size; return nil }

var _ io.WriterAt = (*sink)(nil)

// Sorted returns the op type names of counts in a stable order.
func Sorted(counts map[string]uint64) []string {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
