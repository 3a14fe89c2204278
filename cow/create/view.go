package create

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/vabc-go/vabc/cow"
)

// View is the snapshot device a COW describes over a base image: each block
// comes from the COW op covering it, or from the base device when there is
// none (what snapuserd serves, without merging anything). Blocks past the
// base image and not covered by an op read as zeros.
//
// On a partially merged COW (num_merge_ops > 0) the ops of the merged prefix
// of the merge order are served from the base device at their destination,
// as snapuserd does for completed merge windows.
type View struct {
	r    *cow.Reader
	base Image
	bs   int
	// slot maps a destination block to the op covering it (index into
	// r.Ops()) and the block's position within a multi-block op. The first
	// op naming a block wins, as AOSP's block_map.
	slot    map[uint64]viewSlot
	blocks  uint64      // highest covered block + 1
	cowData io.ReaderAt // for scratch copies
}

type viewSlot struct {
	op     int
	within uint32
	merged bool
	// scratch, if non-zero, is the COW offset of the block's read-ahead copy.
	scratch int64
}

// loadScratch reads a read_ahead_state 2 window from the scratch region
// (cow-format.md §5) with cow.ReadScratch, the decoder snapuserd and its
// merge use: its entries must be the next ops of the merge order.
func (v *View) loadScratch(cowData io.ReaderAt) error {
	sc, err := v.r.ReadScratch(cowData)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	if sc == nil || sc.State != cow.ReadAheadDone {
		return nil
	}
	v.cowData = cowData
	for _, e := range sc.Entries {
		sl := v.slot[e.NewBlock]
		sl.scratch = int64(e.FileOffset)
		v.slot[e.NewBlock] = sl
	}
	return nil
}

// NewView indexes the data ops of r over the base image. cowData, if not
// nil, is the COW file itself: when its scratch region holds a persisted but
// uncommitted merge window (read_ahead_state 2), the blocks of that window
// are served from the scratch copy, as snapuserd does after a crash, since
// the base device may hold a partial write of the window.
func NewView(r *cow.Reader, cowData io.ReaderAt, base Image) (*View, error) {
	h := r.Header()
	bs := int(h.BlockSize)
	if bs < minBlockSize || bs > maxBlockSize || bs&(bs-1) != 0 {
		return nil, fmt.Errorf("create: COW block size %d is not a power of two from %d to %d", bs, minBlockSize, maxBlockSize)
	}
	v := &View{r: r, base: base, bs: bs, slot: map[uint64]viewSlot{}}
	ops := r.Ops()
	for i := range ops {
		op := &ops[i]
		if op.Type.IsMetadata() {
			continue
		}
		switch op.Type {
		case cow.OpCopy, cow.OpReplace, cow.OpZero, cow.OpXor:
		default:
			return nil, fmt.Errorf("create: op %d: unknown type %s", i, op.Type)
		}
		n := op.Blocks()
		for k := uint64(0); k < n; k++ {
			b := op.NewBlock + k
			if _, dup := v.slot[b]; !dup {
				v.slot[b] = viewSlot{op: i, within: uint32(k)}
			}
			v.blocks = max(v.blocks, b+1)
		}
	}
	start := r.MergeOpStart()
	idx := r.MergeIndex()
	if start > uint64(len(idx)) {
		return nil, fmt.Errorf("create: num_merge_ops %d exceeds the %d data ops", start, len(idx))
	}
	if cowData != nil {
		if err := v.loadScratch(cowData); err != nil {
			return nil, err
		}
	}
	for _, i := range idx[:start] {
		op := &ops[i]
		for k := uint64(0); k < op.Blocks(); k++ {
			if s, ok := v.slot[op.NewBlock+k]; ok && s.op == i {
				s.merged = true
				v.slot[op.NewBlock+k] = s
			}
		}
	}
	return v, nil
}

// Blocks is the number of blocks the view covers: the base image or the
// highest op destination, whichever is larger.
func (v *View) Blocks() uint64 { return max(v.blocks, blocksOf(v.base.Size, v.bs)) }

// ReadBlock fills buf (one block) with block b of the snapshot.
func (v *View) ReadBlock(b uint64, buf []byte) error {
	if err := v.readBlock(b, buf); err != nil {
		return fmt.Errorf("create: snapshot block %d: %w", b, err)
	}
	return nil
}

func (v *View) readBlock(b uint64, buf []byte) error {
	buf = buf[:v.bs]
	s, ok := v.slot[b]
	if !ok || s.merged {
		return v.base.readPadded(buf, int64(b)*int64(v.bs))
	}
	if s.scratch != 0 {
		if _, err := v.cowData.ReadAt(buf, s.scratch); err != nil {
			return fmt.Errorf("scratch copy at %#x: %w", s.scratch, err)
		}
		return nil
	}
	op := &v.r.Ops()[s.op]
	switch op.Type {
	case cow.OpZero:
		clear(buf)
	case cow.OpCopy:
		if err := v.base.readPadded(buf, int64(op.Source)*int64(v.bs)); err != nil {
			return fmt.Errorf("copy op %d: %w", s.op, err)
		}
	case cow.OpReplace:
		n, err := v.r.ReadOpData(s.op, buf, int(s.within)*v.bs)
		if err != nil {
			return err
		}
		if n != v.bs {
			return fmt.Errorf("replace op %d decoded to %d bytes, want %d", s.op, n, v.bs)
		}
	case cow.OpXor:
		n, err := v.r.ReadOpData(s.op, buf, 0)
		if err != nil {
			return err
		}
		if n != v.bs {
			return fmt.Errorf("xor op %d decoded to %d bytes, want %d", s.op, n, v.bs)
		}
		src := make([]byte, v.bs)
		if err := v.base.readPadded(src, int64(op.Source)); err != nil {
			return fmt.Errorf("xor op %d: %w", s.op, err)
		}
		for i := range buf {
			buf[i] ^= src[i]
		}
	}
	return nil
}

// Mismatch is the first block where a snapshot differs from the expected
// image.
type Mismatch struct {
	Block  uint64 `json:"block"`
	Reason string `json:"reason"`
}

func (m *Mismatch) Error() string { return fmt.Sprintf("block %d: %s", m.Block, m.Reason) }

// Verify compares the view with want block by block over want's size and
// returns the first mismatching block (nil if they are equal). Decode errors
// count as mismatches at their block. Blocks are compared in parallel; the
// reported block is the lowest one that differs whatever threads is.
func (v *View) Verify(ctx context.Context, want Image, threads int, progress func(done, total int64)) (*Mismatch, error) {
	if threads <= 0 {
		threads = 1
	}
	n := blocksOf(want.Size, v.bs)
	var mu sync.Mutex
	var first *Mismatch
	var done int64
	note := func(m *Mismatch) {
		mu.Lock()
		if first == nil || m.Block < first.Block {
			first = m
		}
		mu.Unlock()
	}
	err := parallel(ctx, threads, n, chunkBlocks*v.bs, func(start, end uint64, gbuf, wbuf []byte) error {
		cnt := int(end - start)
		if err := want.readPadded(wbuf[:cnt*v.bs], int64(start)*int64(v.bs)); err != nil {
			return err
		}
		for i := 0; i < cnt; i++ {
			b := start + uint64(i)
			mu.Lock()
			stop := first != nil && first.Block < b
			mu.Unlock()
			if stop {
				break
			}
			got := gbuf[i*v.bs : (i+1)*v.bs]
			if err := v.readBlock(b, got); err != nil {
				note(&Mismatch{Block: b, Reason: err.Error()})
				break
			}
			if !bytes.Equal(got, wbuf[i*v.bs:(i+1)*v.bs]) {
				note(&Mismatch{Block: b, Reason: v.describe(b)})
				break
			}
		}
		if progress != nil {
			mu.Lock()
			done += int64(cnt) * int64(v.bs)
			d := done
			mu.Unlock()
			progress(d, int64(n)*int64(v.bs))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return first, nil
}

// describe says where block b's bytes came from, for mismatch reports.
func (v *View) describe(b uint64) string {
	s, ok := v.slot[b]
	switch {
	case !ok:
		return "data differs (no op: read from the base image)"
	case s.merged:
		return fmt.Sprintf("data differs (op %d already merged: read from the base image)", s.op)
	}
	op := v.r.Ops()[s.op]
	return fmt.Sprintf("data differs (op %d: %s)", s.op, op)
}
