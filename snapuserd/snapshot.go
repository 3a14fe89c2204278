package snapuserd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/kernel/dmuser"
	"github.com/vabc-go/vabc/snapuserd/proto"
)

// BlockSize is the only block size snapuserd accepts (ReadMetadata).
const BlockSize = 4096

// blockEntry is one row of the sorted block index (AOSP chunk_vec_: sector
// → op): the op's first destination block, its index in Ops() and its
// position in the merge order.
type blockEntry struct {
	block uint64
	op    int32
	step  int32
}

// Snapshot serves one userspace snapshot (mode B read path, spec §4): the
// target image assembled from the COW (Replace/Zero/Copy/Xor ops), the
// source device (Copy/Xor inputs) and the base device (unmapped blocks,
// ordered ops already merged). It implements Device. Safe for concurrent
// use by any number of read workers.
type Snapshot struct {
	name   string
	r      *cow.Reader
	src    io.ReaderAt
	base   io.ReaderAt
	size   int64
	index  []blockEntry // sorted by block
	merged uint64       // num_merge_ops at open
	total  uint64       // data ops in the merge order
	// scratch maps new_block → COW file offset of the read-ahead copy of an
	// ordered op whose window was made durable (read_ahead_state == Done)
	// but not committed; those blocks are served from the COW because the
	// merge may already have overwritten their sources.
	scratch map[uint64]int64
	cowRA   io.ReaderAt

	closers []io.Closer

	units payloadCache // decoded Replace/Xor payloads, sharded LRU (unitcache.go)

	bufPool sync.Pool // *[]byte of cow.MaxCompressionSize

	mg snapshotMerge // the merge's files and read-path switch (merging.go)
}

var _ Device = (*Snapshot)(nil)

// SnapshotOptions configures OpenSnapshot.
type SnapshotOptions struct {
	// ODirect opens the source device with O_DIRECT (-o_direct).
	ODirect bool
}

// OpenSnapshot opens the devices of an init request: the COW (parsed in
// merge order), the source (backing) device and the base device
// (base_path_merge), whose size is the snapshot size.
func OpenSnapshot(req proto.InitRequest, opts *SnapshotOptions) (*Snapshot, error) {
	if req.Legacy {
		return nil, ErrLegacy
	}
	var o SnapshotOptions
	if opts != nil {
		o = *opts
	}
	var closers []io.Closer
	fail := func(err error) (*Snapshot, error) {
		for _, c := range closers {
			c.Close()
		}
		return nil, err
	}
	cf, err := os.Open(req.Cow)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, cf)
	cowSize, err := deviceSize(cf)
	if err != nil {
		return fail(err)
	}
	flags := os.O_RDONLY
	if o.ODirect {
		flags |= oDirect
	}
	sf, err := os.OpenFile(req.Backing, flags, 0)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, sf)
	bf, err := os.Open(req.BasePath)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, bf)
	baseSize, err := deviceSize(bf)
	if err != nil {
		return fail(err)
	}
	var src io.ReaderAt = sf
	if o.ODirect {
		src = &alignedReader{r: sf}
	}
	s, err := NewSnapshot(req.Misc, cf, cowSize, src, bf, baseSize, req.Cow)
	if err != nil {
		return fail(err)
	}
	s.closers = closers
	s.mg.open = openMergeFiles(req.Cow, req.Backing, req.BasePath)
	return s, nil
}

// deviceSize returns the size of a regular file or block device.
func deviceSize(f *os.File) (int64, error) {
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("snapuserd: size of %s: %w", f.Name(), err)
	}
	return n, nil
}

// NewSnapshot builds the read path over already open devices. cowPath
// names the COW in errors.
func NewSnapshot(name string, cowRA io.ReaderAt, cowSize int64, src, base io.ReaderAt, baseSize int64, cowPath string) (*Snapshot, error) {
	r, err := cow.NewReader(cowRA, cowSize, &cow.ReaderOptions{Path: cowPath})
	if err != nil {
		return nil, err
	}
	h := r.Header()
	if h.BlockSize != BlockSize {
		return nil, fmt.Errorf("snapuserd: %s: block size %d not supported (only %d)", cowPath, h.BlockSize, BlockSize)
	}
	if baseSize%512 != 0 || baseSize <= 0 {
		return nil, fmt.Errorf("snapuserd: %s: base device size %d is not a positive multiple of 512", name, baseSize)
	}
	s := &Snapshot{name: name, r: r, src: src, base: base, size: baseSize, cowRA: cowRA, merged: h.NumMergeOps}
	ops := r.Ops()
	idx := r.MergeIndex()
	s.total = uint64(len(idx))
	s.index = make([]blockEntry, 0, len(idx))
	for step, i := range idx {
		op := &ops[i]
		if op.Type == cow.OpReplace && int64(BlockSize)<<min(op.FactorShift, 32) > cow.MaxCompressionSize {
			return nil, fmt.Errorf("snapuserd: %s: merge step %d (op %d): compression unit of %d blocks exceeds %d bytes", cowPath, step, i, op.Blocks(), cow.MaxCompressionSize)
		}
		if op.Type != cow.OpReplace && op.FactorShift != 0 {
			return nil, fmt.Errorf("snapuserd: %s: merge step %d (op %d): %v op with compression factor %d", cowPath, step, i, op.Type, op.Blocks())
		}
		if op.NewBlock >= uint64(baseSize)/BlockSize+1 || op.NewBlock+op.Blocks() > (uint64(baseSize)+BlockSize-1)/BlockSize {
			return nil, fmt.Errorf("snapuserd: %s: merge step %d (op %d): new_block %d (+%d) beyond the base device (%d bytes)", cowPath, step, i, op.NewBlock, op.Blocks(), baseSize)
		}
		switch op.Type {
		case cow.OpReplace, cow.OpZero, cow.OpCopy, cow.OpXor:
		default:
			return nil, fmt.Errorf("snapuserd: %s: merge step %d (op %d): unexpected op type %v", cowPath, step, i, op.Type)
		}
		s.index = append(s.index, blockEntry{block: op.NewBlock, op: int32(i), step: int32(step)})
	}
	sort.Slice(s.index, func(a, b int) bool { return s.index[a].block < s.index[b].block })
	for k := 1; k < len(s.index); k++ {
		prev, cur := s.index[k-1], s.index[k]
		if cur.block < prev.block+ops[prev.op].Blocks() {
			return nil, fmt.Errorf("snapuserd: %s: op %d (new_block %d) overlaps op %d (new_block %d, %d blocks)",
				cowPath, cur.op, cur.block, prev.op, prev.block, ops[prev.op].Blocks())
		}
	}
	if err := s.loadScratch(); err != nil {
		return nil, err
	}
	s.units.setLimit(unitCacheBytes)
	s.bufPool.New = func() any { b := make([]byte, cow.MaxCompressionSize); return &b }
	return s, nil
}

// loadScratch rebuilds the block → scratch-buffer map when the header says
// a read-ahead window was made durable (PrepareReadAhead /
// ReconstructDataFromCow). The region is decoded and validated by
// cow.ReadScratch, the decoder merge.New uses, so that the read path before
// initiate_merge accepts exactly the scratch states the merge accepts.
func (s *Snapshot) loadScratch() error {
	sc, err := s.r.ReadScratch(s.cowRA)
	if err != nil {
		return fmt.Errorf("snapuserd: %s: %w", s.name, err)
	}
	if sc == nil || sc.State != cow.ReadAheadDone {
		return nil
	}
	s.scratch = make(map[uint64]int64, len(sc.Entries))
	for _, e := range sc.Entries {
		s.scratch[e.NewBlock] = int64(e.FileOffset)
	}
	return nil
}

// Size implements Device.
func (s *Snapshot) Size() int64 { return s.size }

// Reader exposes the parsed COW.
func (s *Snapshot) Reader() *cow.Reader { return s.r }

// MergeProgress implements MergeReporter from the header at open time.
func (s *Snapshot) MergeProgress() (merged, total uint64, failed bool) {
	return min(s.merged, s.total), s.total, s.merged > s.total
}

// Close releases the devices opened by OpenSnapshot.
func (s *Snapshot) Close() error {
	var errs []error
	for _, c := range s.closers {
		errs = append(errs, c.Close())
	}
	s.closers = nil
	return errors.Join(errs...)
}

// WriteSectors implements dmuser.Handler: snapshots are read-only (AOSP
// mounts every snapshotted partition read-only; read_worker rejects writes).
func (s *Snapshot) WriteSectors(p []byte, sector uint64) error { return dmuser.ErrReadOnly }

// Flush implements dmuser.Handler (nothing is buffered).
func (s *Snapshot) Flush() error { return nil }

// Discard implements dmuser.Handler.
func (s *Snapshot) Discard(sector, length uint64) error { return dmuser.ErrUnsupported }

// lookup returns the index entry covering block b.
func (s *Snapshot) lookup(b uint64) (blockEntry, bool) {
	i := sort.Search(len(s.index), func(k int) bool { return s.index[k].block > b })
	// index[i-1] is the last entry with block ≤ b.
	if i == 0 {
		return blockEntry{}, false
	}
	e := s.index[i-1]
	op := &s.r.Ops()[e.op]
	if b < e.block+op.Blocks() {
		return e, true
	}
	return blockEntry{}, false
}

// nextMapped returns the first mapped block ≥ b (or ^0).
func (s *Snapshot) nextMapped(b uint64) uint64 {
	i := sort.Search(len(s.index), func(k int) bool { return s.index[k].block >= b })
	if i == len(s.index) {
		return ^uint64(0)
	}
	return s.index[i].block
}

// ReadSectors implements dmuser.Handler: aligned blocks are produced in
// place, an unaligned head or tail from its containing block, and runs of
// unmapped blocks with one read of the base device.
//
// While (and after) the merge engine runs, only the destinations of ordered
// ops (Copy/Xor) go through its ReadAt, which follows the window states
// (snapuserd.md §4): their sources may be overwritten by the merge. Replace
// and Zero blocks come from the COW and unmapped blocks from the base device
// as before the merge, through the same coalesced, cached path: the merge
// never changes a COW payload nor writes an unmapped block.
func (s *Snapshot) ReadSectors(p []byte, sector uint64) error {
	eng := s.beginRead()
	if eng == nil {
		defer s.endRead()
	}
	if sector > uint64(s.size)/512 || int64(sector)*512+int64(len(p)) > s.size {
		return fmt.Errorf("snapuserd: %s: read of %d bytes at sector %d beyond device end (%d bytes)", s.name, len(p), sector, s.size)
	}
	off := int64(sector) * 512
	var tmp *[]byte
	defer func() {
		if tmp != nil {
			s.bufPool.Put(tmp)
		}
	}()
	for len(p) > 0 {
		blk := uint64(off / BlockSize)
		inner := int(off % BlockSize)
		if _, ok := s.lookup(blk); !ok {
			// Unmapped run: read straight from the base device.
			end := min(s.nextMapped(blk)*BlockSize, uint64(off)+uint64(len(p)))
			if s.nextMapped(blk) == ^uint64(0) {
				end = uint64(off) + uint64(len(p))
			}
			n := int(end - uint64(off))
			if err := readFull(s.base, p[:n], off); err != nil {
				return fmt.Errorf("snapuserd: %s: base device read at %d: %w", s.name, off, err)
			}
			p, off = p[n:], off+int64(n)
			continue
		}
		if eng != nil {
			if k := s.orderedRun(blk, uint64(off)+uint64(len(p))); k > 0 {
				// Ordered ops' blocks: the merge engine's state decides.
				n := int(min(int64(blk+k)*BlockSize, off+int64(len(p))) - off)
				if _, err := eng.ReadAt(p[:n], off); err != nil {
					return fmt.Errorf("snapuserd: %s: read of %d bytes at %d during merge: %w", s.name, n, off, err)
				}
				p, off = p[n:], off+int64(n)
				continue
			}
		}
		n := min(BlockSize-inner, len(p))
		if inner == 0 && n == BlockSize {
			k, err := s.readRun(blk, p)
			if err != nil {
				return err
			}
			n = k
		} else {
			if tmp == nil {
				tmp = s.bufPool.Get().(*[]byte)
			}
			b := (*tmp)[:BlockSize]
			if err := s.readBlock(blk, b); err != nil {
				return err
			}
			copy(p[:n], b[inner:])
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// readRun produces one or more whole mapped blocks from block b into p
// (len(p) >= BlockSize) and returns the bytes written: a run of Copy ops
// with consecutive sources is one source read, a run of Xor ops with
// consecutive sources is one source read plus the per-block payloads, and a
// Replace unit gives all of its blocks that p covers in one cache read, or
// is decompressed straight into p when p covers the whole unit.
func (s *Snapshot) readRun(b uint64, p []byte) (int, error) {
	i := sort.Search(len(s.index), func(k int) bool { return s.index[k].block > b }) - 1
	ops := s.r.Ops()
	e := s.index[i]
	op := &ops[e.op]
	maxBlocks := uint64(len(p) / BlockSize)
	switch {
	case op.Type == cow.OpReplace && op.FactorShift > 0:
		first := b - e.block
		k := min(op.Blocks()-first, maxBlocks)
		unit := BlockSize << op.FactorShift
		if first == 0 && k == op.Blocks() {
			// The whole unit: no cache, no copy.
			n, err := s.r.ReadOpData(int(e.op), p[:unit], 0)
			if err != nil {
				return 0, fmt.Errorf("snapuserd: %s: block %d (op %d, replace ×%d): decompress: %w", s.name, b, e.op, op.Blocks(), err)
			}
			if n != unit {
				return 0, fmt.Errorf("snapuserd: %s: block %d: op %d decompressed to %d bytes, want %d", s.name, b, e.op, n, unit)
			}
			return unit, nil
		}
		at := int(first * BlockSize)
		dst := p[:k*BlockSize]
		n, err := s.units.read(e.op, unit, at, dst, s.loader(e.op))
		if err != nil {
			return 0, fmt.Errorf("snapuserd: %s: block %d (op %d, replace ×%d): decompress: %w", s.name, b, e.op, op.Blocks(), err)
		}
		if at+len(dst) > n {
			return 0, fmt.Errorf("snapuserd: %s: block %d: op %d decompressed to %d bytes, blocks [%d, %d)", s.name, b, e.op, n, at, at+len(dst))
		}
		return len(dst), nil
	case op.Type == cow.OpCopy || op.Type == cow.OpXor:
		k := s.sourceRun(i, maxBlocks)
		if k <= 1 {
			break
		}
		srcOff, _ := s.r.SourceOffset(op)
		dst := p[:k*BlockSize]
		if err := readFull(s.src, dst, int64(srcOff)); err != nil {
			return 0, fmt.Errorf("snapuserd: %s: blocks [%d, %d) (ops from %d, %v): source device read at %d: %w", s.name, b, b+k, e.op, op.Type, srcOff, err)
		}
		if op.Type == cow.OpCopy {
			return len(dst), nil
		}
		tp := s.bufPool.Get().(*[]byte)
		defer s.bufPool.Put(tp)
		x := (*tp)[:BlockSize]
		for j := range k {
			ej := s.index[i+int(j)]
			n, err := s.units.read(ej.op, BlockSize, 0, x, s.loader(ej.op))
			if err == nil && n != BlockSize {
				err = fmt.Errorf("%d bytes, want %d", n, BlockSize)
			}
			if err != nil {
				return 0, fmt.Errorf("snapuserd: %s: block %d (op %d, %v): xor payload: %w", s.name, b+j, ej.op, cow.OpXor, err)
			}
			xorWords(dst[j*BlockSize:(j+1)*BlockSize], x)
		}
		return len(dst), nil
	}
	return BlockSize, s.readBlock(b, p[:BlockSize])
}

// orderedRun counts the consecutive blocks from b on, up to byte offset
// end, whose ops are ordered (Copy/Xor); 0 if b's op is not.
func (s *Snapshot) orderedRun(b, end uint64) uint64 {
	i := sort.Search(len(s.index), func(k int) bool { return s.index[k].block > b }) - 1
	ops := s.r.Ops()
	var k uint64
	for ; i >= 0 && i < len(s.index) && (b+k)*BlockSize < end; i++ {
		e := s.index[i]
		op := &ops[e.op]
		if (op.Type != cow.OpCopy && op.Type != cow.OpXor) || e.block > b+k || b+k >= e.block+op.Blocks() {
			break
		}
		k = e.block + op.Blocks() - b
	}
	return k
}

// sourceRun counts the index entries from i on (at most max) that can be
// read with one source read: ops of index[i]'s type (Copy or Xor) on
// consecutive blocks with consecutive sources, none merged yet and none
// with a read-ahead copy in scratch.
func (s *Snapshot) sourceRun(i int, max uint64) uint64 {
	ops := s.r.Ops()
	first := &ops[s.index[i].op]
	firstSrc, _ := s.r.SourceOffset(first)
	var k uint64
	for ; k < max && i+int(k) < len(s.index); k++ {
		e := s.index[i+int(k)]
		op := &ops[e.op]
		if op.Type != first.Type || e.block != s.index[i].block+k || uint64(e.step) < s.merged {
			break
		}
		if src, _ := s.r.SourceOffset(op); src != firstSrc+k*BlockSize {
			break
		}
		if _, ok := s.scratch[e.block]; ok {
			break
		}
	}
	return k
}

func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// readBlock produces mapped block b into dst (BlockSize bytes).
func (s *Snapshot) readBlock(b uint64, dst []byte) error {
	e, ok := s.lookup(b)
	if !ok {
		return readFull(s.base, dst, int64(b)*BlockSize)
	}
	ops := s.r.Ops()
	op := &ops[e.op]
	fail := func(what string, err error) error {
		return fmt.Errorf("snapuserd: %s: block %d (op %d, %v): %s: %w", s.name, b, e.op, op.Type, what, err)
	}
	switch op.Type {
	case cow.OpZero:
		clear(dst)
		return nil
	case cow.OpReplace:
		return s.readUnit(e, op, b, dst)
	case cow.OpCopy, cow.OpXor:
		if uint64(e.step) < s.merged {
			// Window COMPLETED: the merge already wrote the target block.
			if err := readFull(s.base, dst, int64(b)*BlockSize); err != nil {
				return fail("base device read (merged)", err)
			}
			return nil
		}
		if off, ok := s.scratch[b]; ok {
			// Durable read-ahead copy (already XOR-applied).
			if err := readFull(s.cowRA, dst, off); err != nil {
				return fail("scratch read", err)
			}
			return nil
		}
		srcOff, _ := s.r.SourceOffset(op)
		if err := readFull(s.src, dst, int64(srcOff)); err != nil {
			return fail(fmt.Sprintf("source device read at %d", srcOff), err)
		}
		if op.Type == cow.OpCopy {
			return nil
		}
		tp := s.bufPool.Get().(*[]byte)
		defer s.bufPool.Put(tp)
		x := (*tp)[:BlockSize]
		n, err := s.units.read(e.op, BlockSize, 0, x, s.loader(e.op))
		if err != nil {
			return fail("xor payload", err)
		}
		if n != BlockSize {
			return fail("xor payload", fmt.Errorf("%d bytes, want %d", n, BlockSize))
		}
		xorWords(dst, x)
		return nil
	}
	return fail("serve", errors.New("op type not servable"))
}

// xorWords XORs x into dst eight bytes at a time (AOSP's word-wise XOR).
func xorWords(dst, x []byte) {
	for i := 0; i+8 <= len(dst); i += 8 {
		d := uint64(dst[i]) | uint64(dst[i+1])<<8 | uint64(dst[i+2])<<16 | uint64(dst[i+3])<<24 |
			uint64(dst[i+4])<<32 | uint64(dst[i+5])<<40 | uint64(dst[i+6])<<48 | uint64(dst[i+7])<<56
		v := uint64(x[i]) | uint64(x[i+1])<<8 | uint64(x[i+2])<<16 | uint64(x[i+3])<<24 |
			uint64(x[i+4])<<32 | uint64(x[i+5])<<40 | uint64(x[i+6])<<48 | uint64(x[i+7])<<56
		d ^= v
		dst[i], dst[i+1], dst[i+2], dst[i+3] = byte(d), byte(d>>8), byte(d>>16), byte(d>>24)
		dst[i+4], dst[i+5], dst[i+6], dst[i+7] = byte(d>>32), byte(d>>40), byte(d>>48), byte(d>>56)
	}
}

// readUnit serves block b from a Replace op (one block or a multi-block
// unit) through the payload cache, so that reads of a unit's blocks
// decompress it once.
func (s *Snapshot) readUnit(e blockEntry, op *cow.Op, b uint64, dst []byte) error {
	at := int((b - e.block) * BlockSize)
	n, err := s.units.read(e.op, BlockSize<<op.FactorShift, at, dst, s.loader(e.op))
	if err != nil {
		return fmt.Errorf("snapuserd: %s: block %d (op %d, replace ×%d): decompress: %w", s.name, b, e.op, op.Blocks(), err)
	}
	if at+BlockSize > n {
		return fmt.Errorf("snapuserd: %s: block %d: op %d decompressed to %d bytes, block offset %d", s.name, b, e.op, n, at)
	}
	return nil
}

// loader decodes op i's payload for the payload cache.
func (s *Snapshot) loader(i int32) func([]byte) (int, error) {
	return func(buf []byte) (int, error) { return s.r.ReadOpData(int(i), buf, 0) }
}
