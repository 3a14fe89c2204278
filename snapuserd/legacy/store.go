package legacy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/vabc-go/vabc/cow"
)

// The dm-snapshot persistent exception store format (Linux
// drivers/md/dm-snap-persistent.c; snapuserd.md §3).
const (
	Magic         = 0x70416e53 // disk_header.magic, "SnAp" little-endian
	Valid         = 1          // disk_header.valid
	Version       = 1          // disk_header.version
	ChunkSectors  = 8          // disk_header.chunk_size: 8 sectors = 4 KiB
	ChunkSize     = ChunkSectors * 512
	HeaderSize    = 16 // disk_header: magic, valid, version, chunk_size (u32 each)
	ExceptionSize = 16 // disk_exception: old_chunk, new_chunk (u64 each)
	// ExceptionsPerArea is exceptions_per_area: one chunk of exceptions.
	ExceptionsPerArea = ChunkSize / ExceptionSize
	// Stride is the distance between metadata areas in chunks: the area
	// chunk and the data chunks that follow it.
	Stride = ExceptionsPerArea + 1
	// firstDataChunk: chunk 0 is the header, chunk 1 metadata area 0.
	firstDataChunk = 2
)

// ErrBadMetadataWrite marks kernel writes of a metadata area that are not a
// merge step of this store (torn, malformed, or out of order). Nothing is
// committed for them.
var ErrBadMetadataWrite = errors.New("legacy: metadata write is not a valid merge step")

// Exception is one disk_exception.
type Exception struct {
	OldChunk uint64 // chunk of the origin (base device) = the op's new_block
	NewChunk uint64 // chunk of the exception store holding the data
}

// IsMetadataChunk reports whether chunk c holds a metadata area.
func IsMetadataChunk(c uint64) bool { return c%Stride == 1 }

// AreaChunk returns the chunk of metadata area a.
func AreaChunk(a int) uint64 { return 1 + uint64(a)*Stride }

// nextChunk is GetNextAllocatableChunkId: the next chunk that is not a
// metadata area.
func nextChunk(c uint64) uint64 {
	c++
	if IsMetadataChunk(c) {
		c++
	}
	return c
}

// ref says which block of which merge-order op an exception carries.
type ref struct {
	idx int32  // index in the merge order
	blk uint32 // block of a multi-block Replace op (0 for others)
}

// Layout is the synthesized exception store of a COW from a merge position
// on (Snapuserd::ReadMetadata): the exceptions in the order they are placed
// in the areas, their chunk ids, and how many of them the kernel merged.
//
// Exceptions are placed in reverse merge order, so the kernel, which
// merges from the last exception backwards, merges in merge order.
// Replace/Zero ops come first with consecutive chunk ids (the kernel
// batches runs whose old and new chunks are both consecutive). One chunk id
// is skipped before the first ordered op and before every batch of ordered
// ops; a batch ends at an area end, or before an op whose destination is a
// source of an earlier op of the batch or whose source is an earlier
// destination. With read-ahead one more id is skipped after every window's
// worth of ordered ops (counted from the merge position). A multi-block
// Replace op (v3 compression factor; Android 12 never had them) gets one
// exception per block, ascending, and counts as merged with its first block.
//
// A layout from a later merge position is a prefix of this one (the ops
// near the end of the merge order are placed first), which is what lets a
// restarted daemon serve a kernel that is in the middle of a merge.
type Layout struct {
	exc  []Exception // placement order; NewChunk strictly increasing
	refs []ref
	// chunks is the store size in chunks (next free chunk id).
	chunks uint64
	// areas the kernel may read or write: enough for every exception plus
	// a terminating zero entry.
	areas int
	// merged counts exceptions the kernel merged: the last merged of exc.
	merged int
}

// srcBlocks returns the base blocks an ordered op reads (two when an Xor
// source is not block aligned).
func srcBlocks(op *cow.Op) (a, b uint64, two bool) {
	if op.Type == cow.OpXor {
		a = op.Source / ChunkSize
		return a, a + 1, op.Source%ChunkSize != 0
	}
	return op.Source, op.Source, false
}

// NewLayout places the ops order[start:] (the merge order; ordered ops
// first) in a store. raOps is the read-ahead window in ordered ops, 0
// without read-ahead.
func NewLayout(order []cow.Op, start, raOps int) (*Layout, error) {
	if start < 0 || start > len(order) {
		return nil, fmt.Errorf("legacy: merge position %d outside the %d data ops", start, len(order))
	}
	l := &Layout{}
	add := func(i int, blk uint32, c uint64) {
		l.exc = append(l.exc, Exception{OldChunk: order[i].NewBlock + uint64(blk), NewChunk: c})
		l.refs = append(l.refs, ref{idx: int32(i), blk: blk})
	}
	cur := uint64(firstDataChunk)
	i := len(order) - 1
	for ; i >= start && !order[i].Type.IsOrdered(); i-- {
		op := &order[i]
		if op.Type != cow.OpReplace && op.Type != cow.OpZero {
			return nil, fmt.Errorf("legacy: merge-order op %d: %v is not a data op", i, op.Type)
		}
		for k := uint32(0); k < uint32(op.Blocks()); k++ {
			add(i, k, cur)
			cur = nextChunk(cur)
		}
	}
	if i >= start {
		cur = nextChunk(cur) // no batch across Replace/Zero and ordered ops
	}
	remaining := 0 // ordered ops still to place (total_copy_ops)
	for k := start; k <= i; k++ {
		if !order[k].Type.IsOrdered() {
			return nil, fmt.Errorf("legacy: merge-order op %d: %v after ordered ops is not allowed (ordered ops merge first)", k, order[k].Type)
		}
		if order[k].FactorShift != 0 {
			return nil, fmt.Errorf("legacy: merge-order op %d: %v op with a compression factor", k, order[k].Type)
		}
		remaining++
	}
	var batch []int
	srcs := map[uint64]bool{} // sources of the batch's ops
	dsts := map[uint64]bool{} // destinations of the batch's ops
	for i >= start {
		pending := ExceptionsPerArea - len(l.exc)%ExceptionsPerArea
		batch = batch[:0]
		clear(srcs)
		clear(dsts)
		for ; i >= start && pending > 0; i-- {
			op := &order[i]
			a, b, two := srcBlocks(op)
			if len(batch) > 0 && (srcs[op.NewBlock] || dsts[a] || (two && dsts[b])) {
				break
			}
			batch = append(batch, i)
			srcs[a] = true
			if two {
				srcs[b] = true
			}
			dsts[op.NewBlock] = true
			pending--
		}
		cur = nextChunk(cur)
		for _, k := range batch {
			add(k, 0, cur)
			cur = nextChunk(cur)
			remaining--
			if raOps > 0 && remaining%raOps == 0 {
				cur = nextChunk(cur) // read-ahead window boundary
			}
		}
	}
	l.chunks = cur
	l.areas = len(l.exc)/ExceptionsPerArea + 1
	return l, nil
}

// Size is the store size in bytes (init's num_sectors × 512).
func (l *Layout) Size() int64 { return int64(l.chunks) * ChunkSize }

// Exceptions returns the exceptions in placement order (do not modify).
func (l *Layout) Exceptions() []Exception { return l.exc }

// Areas is the number of metadata areas.
func (l *Layout) Areas() int { return l.areas }

// Merged is the number of exceptions the kernel merged so far.
func (l *Layout) Merged() int { return l.merged }

// unmerged is the end of the exceptions still in the store.
func (l *Layout) unmerged() int { return len(l.exc) - l.merged }

// AppendHeader appends the disk_header chunk.
func AppendHeader(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, Magic)
	dst = binary.LittleEndian.AppendUint32(dst, Valid)
	dst = binary.LittleEndian.AppendUint32(dst, Version)
	dst = binary.LittleEndian.AppendUint32(dst, ChunkSectors)
	return append(dst, make([]byte, ChunkSize-HeaderSize)...)
}

// Area fills p (one chunk) with metadata area a as the kernel sees it now:
// merged exceptions zeroed, zero entries after the last exception, and
// all zeros for areas past the last.
func (l *Layout) Area(a int, p []byte) {
	clear(p[:ChunkSize])
	lo := a * ExceptionsPerArea
	hi := min(lo+ExceptionsPerArea, l.unmerged())
	for g := lo; g < hi; g++ {
		o := (g - lo) * ExceptionSize
		binary.LittleEndian.PutUint64(p[o:], l.exc[g].OldChunk)
		binary.LittleEndian.PutUint64(p[o+8:], l.exc[g].NewChunk)
	}
}

// lookup returns the exception placed at data chunk c.
func (l *Layout) lookup(c uint64) (int, bool) {
	g := sort.Search(len(l.exc), func(k int) bool { return l.exc[k].NewChunk >= c })
	return g, g < len(l.exc) && l.exc[g].NewChunk == c
}

// MergeStep is a validated kernel merge notification.
type MergeStep struct {
	Area       int // metadata area written
	First      int // first exception (placement index) merged by this write
	Exceptions int // exceptions newly merged (≥ 1)
	// Spans: the step also covers exceptions of later areas, which the
	// store still holds although the kernel, writing this area, must have
	// merged them. That happens only right after a daemon restart inside a
	// read-ahead window (its merged part is committed with the window);
	// the caller decides whether that is the case.
	Spans bool
}

func badWrite(a int, format string, args ...any) error {
	return fmt.Errorf("legacy: metadata area %d (chunk %d): %s: %w", a, AreaChunk(a), fmt.Sprintf(format, args...), ErrBadMetadataWrite)
}

// Interpret validates the kernel's write of metadata area a (one chunk, p)
// as a merge step (the kernel zeroes the exceptions it merged, the last
// ones of the area, and writes the area back) and returns the step. It
// changes nothing: the caller commits, then calls Apply. The written area
// must be exactly this store's area with the trailing n ≥ 1 still unmerged
// exceptions zeroed; AOSP's daemon checked less (only the leading entries
// and the zeroed ones), an accepted write here is accepted there too.
func (l *Layout) Interpret(a int, p []byte) (MergeStep, error) {
	if len(p) != ChunkSize {
		return MergeStep{}, badWrite(a, "%d bytes written, want a whole chunk (%d)", len(p), ChunkSize)
	}
	if a < 0 || a >= l.areas {
		return MergeStep{}, badWrite(a, "the store has %d areas", l.areas)
	}
	lo := a * ExceptionsPerArea
	u := l.unmerged()
	k := 0 // leading non-zero entries
	for ; k < ExceptionsPerArea; k++ {
		o := k * ExceptionSize
		old, nc := binary.LittleEndian.Uint64(p[o:]), binary.LittleEndian.Uint64(p[o+8:])
		if old == 0 && nc == 0 {
			break
		}
		g := lo + k
		if nc == 0 {
			return MergeStep{}, badWrite(a, "entry %d has old_chunk %d and new_chunk 0", k, old)
		}
		if g >= u {
			return MergeStep{}, badWrite(a, "entry %d {old_chunk %d, new_chunk %d}: the store holds no unmerged exception there", k, old, nc)
		}
		if e := l.exc[g]; e.OldChunk != old || e.NewChunk != nc {
			return MergeStep{}, badWrite(a, "entry %d {old_chunk %d, new_chunk %d} differs from the store's {%d, %d}", k, old, nc, e.OldChunk, e.NewChunk)
		}
	}
	if k == ExceptionsPerArea {
		return MergeStep{}, badWrite(a, "all %d entries still set: nothing merged", ExceptionsPerArea)
	}
	for j := k + 1; j < ExceptionsPerArea; j++ {
		o := j * ExceptionSize
		if binary.LittleEndian.Uint64(p[o:]) != 0 || binary.LittleEndian.Uint64(p[o+8:]) != 0 {
			return MergeStep{}, badWrite(a, "entry %d is set after the zero entry %d (torn or not a merge)", j, k)
		}
	}
	n := u - (lo + k)
	if n < 1 {
		return MergeStep{}, badWrite(a, "no exception newly zeroed (%d unmerged in the store, %d left set by the write)", u-lo, k)
	}
	return MergeStep{Area: a, First: lo + k, Exceptions: n, Spans: u > lo+ExceptionsPerArea}, nil
}

// completedOps returns the merge-order index range of the ops that step
// completes: [from, from+n). The exceptions of a multi-block op are merged
// from its last block to its first.
func (l *Layout) completedOps(s MergeStep) (from, n int) {
	from = -1
	for g := s.First + s.Exceptions - 1; g >= s.First; g-- {
		if r := l.refs[g]; r.blk == 0 {
			if from < 0 {
				from = int(r.idx)
			}
			n++
		}
	}
	return from, n
}

// Apply records a step returned by Interpret (after its commit).
func (l *Layout) Apply(s MergeStep) { l.merged += s.Exceptions }
