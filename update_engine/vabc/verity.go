package vabc

import (
	"context"
	"fmt"
	"math"
	"sync"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/ops"
	"github.com/vabc-go/vabc/update_engine/verity"
)

// Verity (spec payload-format.md §3.3, §3.9): a partition with
// hash_tree_extent / fec_extent has no install operations for those blocks.
// As update_engine's verity writer does on the snapshot device, the writer
// computes the hash tree over hash_tree_data_extent and then the FEC over
// fec_data_extent from the new partition as the snapshot serves it (old
// image + the COW up to the last install op's label), and writes both as
// Replace data followed by Label(len(operations)+1). The end-of-run check
// (old + COW against new_partition_info.hash) then covers them.

func hasVerity(pu *metadata.PartitionUpdate) bool {
	return pu.GetHashTreeExtent().GetNumBlocks() > 0 || pu.GetFecExtent().GetNumBlocks() > 0
}

// lastOpLabel is the highest label before the end label: one per install
// operation, plus one after the verity data.
func lastOpLabel(pu *metadata.PartitionUpdate) uint64 {
	n := uint64(len(pu.Operations))
	if hasVerity(pu) {
		n++
	}
	return n
}

func vext(e *metadata.Extent) verity.Extent {
	return verity.Extent{Start: e.GetStartBlock(), Num: e.GetNumBlocks()}
}

// checkVerity validates the verity fields of pu before anything is written.
func checkVerity(pu *metadata.PartitionUpdate, bs int64) error {
	name := pu.GetPartitionName()
	if !hasVerity(pu) {
		return nil
	}
	size := imageSize(pu, bs)
	if size < 0 || size > math.MaxInt64-bs {
		return fmt.Errorf("vabc: partition %s: partition size %d", name, uint64(size))
	}
	blocks := uint64((size + bs - 1) / bs)
	type pair struct {
		what       string
		data, area *metadata.Extent
	}
	for _, x := range []pair{
		{"hash tree", pu.GetHashTreeDataExtent(), pu.GetHashTreeExtent()},
		{"FEC", pu.GetFecDataExtent(), pu.GetFecExtent()},
	} {
		if x.area.GetNumBlocks() == 0 {
			continue
		}
		if x.data.GetNumBlocks() == 0 {
			return fmt.Errorf("vabc: partition %s: %s extent without a data extent", name, x.what)
		}
		for _, e := range []*metadata.Extent{x.data, x.area} {
			if e.GetStartBlock() > blocks || e.GetNumBlocks() > blocks-e.GetStartBlock() {
				return fmt.Errorf("vabc: partition %s: %s extent %d+%d is outside the %d-block partition", name, x.what, e.GetStartBlock(), e.GetNumBlocks(), blocks)
			}
		}
	}
	if t, f := pu.GetHashTreeExtent().GetNumBlocks(), pu.GetFecExtent().GetNumBlocks(); t > uint64(ops.MaxDiffSource/bs) || f > uint64(ops.MaxDiffSource/bs)-t {
		return fmt.Errorf("vabc: partition %s: hash tree (%d blocks) and FEC (%d blocks) are too large to buffer", name, t, f)
	}
	switch pu.GetHashTreeAlgorithm() {
	case "", "sha1", "sha256", "sha512":
	default:
		if pu.GetHashTreeExtent().GetNumBlocks() > 0 {
			return fmt.Errorf("vabc: partition %s: hash_tree_algorithm %q: %w", name, pu.GetHashTreeAlgorithm(), ErrUnsupported)
		}
	}
	if r := pu.GetFecRoots(); pu.GetFecExtent().GetNumBlocks() > 0 && (r < 2 || r > 24) {
		return fmt.Errorf("vabc: partition %s: fec_roots %d (want 2…24)", name, r)
	}
	return nil
}

// overlayImage is the snapshot view with the regenerated blocks on top. The
// verity builders read and write it from several goroutines.
type overlayImage struct {
	mu   sync.Mutex
	v    *SnapshotView
	bs   int64
	over map[uint64][]byte
	tmp  []byte
}

// block returns block b (overlay first), or an error.
func (o *overlayImage) block(b uint64) ([]byte, error) {
	if d, ok := o.over[b]; ok {
		return d, nil
	}
	if err := o.v.ReadBlock(o.tmp, b); err != nil {
		return nil, fmt.Errorf("reading new block %d: %w", b, err)
	}
	return o.tmp, nil
}

func (o *overlayImage) ReadAt(p []byte, off int64) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		b, in := uint64(pos/o.bs), pos%o.bs
		d, err := o.block(b)
		if err != nil {
			return n, err
		}
		n += copy(p[n:], d[in:])
	}
	return n, nil
}

func (o *overlayImage) WriteAt(p []byte, off int64) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		b, in := uint64(pos/o.bs), pos%o.bs
		d, ok := o.over[b]
		if !ok {
			d = make([]byte, o.bs)
			if in != 0 || int64(len(p)-n) < o.bs {
				src, err := o.block(b)
				if err != nil {
					return n, err
				}
				copy(d, src)
			}
			o.over[b] = d
		}
		n += copy(d[in:], p[n:])
	}
	return n, nil
}

// writeVerity regenerates the hash tree and FEC from old + COW up to label
// (the last install op's) and adds them as Replace data.
func (pw *partWriter) writeVerity(ctx context.Context, label uint64) error {
	wrap := func(err error) error { return fmt.Errorf("vabc: partition %s: verity: %w", pw.name, err) }
	r, err := cow.Open(pw.res.Path, &cow.ReaderOptions{Label: &label})
	if err != nil {
		return wrap(fmt.Errorf("reading the COW written so far: %w", err))
	}
	defer r.Close()
	var v *SnapshotView
	if pw.src != nil {
		v = NewSnapshotView(r, pw.src, pw.srcSz)
	} else {
		v = NewSnapshotView(r, nil, 0)
	}
	over := &overlayImage{v: v, bs: pw.bs, over: map[uint64][]byte{}, tmp: make([]byte, pw.bs)}
	img := verity.WithContext(ctx, over)
	pu := pw.pu
	if pu.GetHashTreeExtent().GetNumBlocks() > 0 {
		if _, err := verity.BuildHashTree(img, pw.bs, pu.GetHashTreeAlgorithm(), pu.HashTreeSalt, vext(pu.HashTreeDataExtent), vext(pu.HashTreeExtent)); err != nil {
			return wrap(err)
		}
	}
	if pu.GetFecExtent().GetNumBlocks() > 0 {
		if err := verity.EncodeFEC(img, pw.bs, int(pu.GetFecRoots()), vext(pu.FecDataExtent), vext(pu.FecExtent)); err != nil {
			return wrap(err)
		}
	}
	for _, e := range []*metadata.Extent{pu.GetHashTreeExtent(), pu.GetFecExtent()} {
		n := e.GetNumBlocks()
		if n == 0 {
			continue
		}
		data := make([]byte, int64(n)*pw.bs)
		if _, err := img.ReadAt(data, int64(e.GetStartBlock())*pw.bs); err != nil {
			return wrap(err)
		}
		if err := pw.apply(ctx, []action{{kind: 'r', dst: e.GetStartBlock(), data: data}}); err != nil {
			return wrap(err)
		}
	}
	return nil
}
