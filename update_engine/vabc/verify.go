package vabc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/vabc-go/vabc/cow"
)

// ErrVerify marks a COW whose snapshot view does not hash to
// new_partition_info.hash.
var ErrVerify = errors.New("vabc: snapshot hash mismatch")

// SnapshotView presents old + COW as the new partition the way snapuserd
// serves reads before the merge: each block comes from the first COW op for
// it (Copy: the source block; Replace: its data; Zero; Xor: data XOR the
// source bytes), or from the base device when no op covers it.
type SnapshotView struct {
	r       *cow.Reader
	base    io.ReaderAt
	baseSz  int64
	bs      int64
	blocks  map[uint64]int // new block → op index
	unitIdx int            // op index of the cached decoded unit, or -1
	unit    []byte
}

// NewSnapshotView indexes the ops of r; base is the source device (may be
// nil for a full update), baseSize its size.
func NewSnapshotView(r *cow.Reader, base io.ReaderAt, baseSize int64) *SnapshotView {
	v := &SnapshotView{r: r, base: base, baseSz: baseSize, bs: int64(r.Header().BlockSize), blocks: map[uint64]int{}, unitIdx: -1}
	for i, op := range r.Ops() {
		switch op.Type {
		case cow.OpCopy, cow.OpReplace, cow.OpZero, cow.OpXor:
			for k := range op.Blocks() {
				if _, ok := v.blocks[op.NewBlock+k]; !ok {
					v.blocks[op.NewBlock+k] = i
				}
			}
		}
	}
	return v
}

// readBase reads p from the base device at off; bytes past its end are zero.
func (v *SnapshotView) readBase(p []byte, off int64) error {
	clear(p)
	if v.base == nil || off >= v.baseSz {
		return nil
	}
	n := min(int64(len(p)), v.baseSz-off)
	if _, err := v.base.ReadAt(p[:n], off); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// ReadBlock fills p (one block) with new block b.
func (v *SnapshotView) ReadBlock(p []byte, b uint64) error {
	i, ok := v.blocks[b]
	if !ok {
		return v.readBase(p, int64(b)*v.bs)
	}
	op := v.r.Ops()[i]
	switch op.Type {
	case cow.OpCopy:
		return v.readBase(p, int64(op.Source)*v.bs)
	case cow.OpZero:
		clear(p)
		return nil
	case cow.OpReplace:
		if op.Blocks() == 1 {
			_, err := v.r.ReadOpData(i, p, 0)
			return err
		}
		if v.unitIdx != i {
			v.unit = make([]byte, int64(op.Blocks())*v.bs)
			if _, err := v.r.ReadOpData(i, v.unit, 0); err != nil {
				return err
			}
			v.unitIdx = i
		}
		k := int64(b-op.NewBlock) * v.bs
		copy(p, v.unit[k:k+v.bs])
		return nil
	case cow.OpXor:
		if _, err := v.r.ReadOpData(i, p, 0); err != nil {
			return err
		}
		src := make([]byte, v.bs)
		if err := v.readBase(src, int64(op.Source)); err != nil {
			return err
		}
		for j := range p {
			p[j] ^= src[j]
		}
		return nil
	}
	return fmt.Errorf("vabc: op %d: unexpected %v", i, op.Type)
}

// Hash returns the SHA-256 of the first size bytes of the view.
func (v *SnapshotView) Hash(size int64) ([]byte, error) {
	return v.HashContext(context.Background(), size)
}

// HashContext is Hash, stopping when ctx ends.
func (v *SnapshotView) HashContext(ctx context.Context, size int64) ([]byte, error) {
	h := sha256.New()
	buf := make([]byte, v.bs)
	for b := int64(0); b*v.bs < size; b++ {
		if b%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		if err := v.ReadBlock(buf, uint64(b)); err != nil {
			return nil, fmt.Errorf("reading new block %d: %w", b, err)
		}
		h.Write(buf[:min(v.bs, size-b*v.bs)])
	}
	return h.Sum(nil), nil
}

// verify checks the finished COW of pw against new_partition_info.hash.
func (pw *partWriter) verify(ctx context.Context, path string, size int64, want []byte) error {
	r, err := openVerified(ctx, path)
	if err != nil {
		return fmt.Errorf("vabc: partition %s: reopening the COW: %w", pw.name, err)
	}
	defer r.Close()
	var base io.ReaderAt
	if pw.src != nil {
		base = pw.src
	}
	got, err := NewSnapshotView(r, base, pw.srcSz).HashContext(ctx, size)
	if err != nil {
		return fmt.Errorf("vabc: partition %s: %w", pw.name, err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("vabc: partition %s: old image + COW hashes to %x, new_partition_info.hash is %x: %w", pw.name, got, want, ErrVerify)
	}
	return nil
}

// openVerified opens the COW at path and checks its merge sequence. Parsing
// and ordering millions of ops takes seconds and cannot be interrupted, so
// it runs aside: a cancelled ctx returns at once (the abandoned parse ends
// with the process, or closes its reader when it finishes).
func openVerified(ctx context.Context, path string) (*cow.Reader, error) {
	type result struct {
		r   *cow.Reader
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := cow.Open(path, nil)
		if err == nil {
			if err = r.VerifyMergeOps(); err != nil {
				r.Close()
				r = nil
			}
		}
		done <- result{r, err}
	}()
	select {
	case res := <-done:
		return res.r, res.err
	case <-ctx.Done():
		go func() {
			if res := <-done; res.r != nil {
				res.r.Close()
			}
		}()
		return nil, ctx.Err()
	}
}
