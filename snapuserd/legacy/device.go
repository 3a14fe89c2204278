package legacy

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
	"github.com/vabc-go/vabc/kernel/dmuser"
	"github.com/vabc-go/vabc/snapuserd/merge"
	"github.com/vabc-go/vabc/snapuserd/proto"
)

// Device serves one COW as a dm-snapshot persistent exception store on a
// dm-user device (the kernel stacks `snapshot <base> <this> P 8` on it). It
// implements the daemon's Device (dmuser.Handler + Size + Close) and
// MergeReporter. Reads are safe from any number of workers; metadata writes
// (merge notifications) are serialised.
type Device struct {
	name  string
	r     *cow.Reader
	order []cow.Op
	eng   *merge.Engine
	start int // num_merge_ops when the store was synthesized

	closers []io.Closer

	mu   sync.Mutex // guards the fields that follow; held while a merge step commits
	lay  *Layout
	done int   // merge-order ops committed or merged since start
	err  error // sticky failure of a merge step's commit
}

// Options configures a Device.
type Options struct {
	// Merge tunes the engine (tests shrink the read-ahead window).
	Merge *merge.Options
}

// Open opens the devices of a 4-field init (legacy Android 12 form): the COW
// read-write (merge state is committed into it) and the backing device,
// which is both the Copy/Xor source and the origin the kernel merges into.
func Open(req proto.InitRequest, opts *Options) (*Device, error) {
	cf, err := faultfs.Open(req.Cow)
	if err != nil {
		return nil, fmt.Errorf("legacy: %w", err)
	}
	bf, err := faultfs.OpenFile(req.Backing, os.O_RDONLY, 0)
	if err != nil {
		cf.Close()
		return nil, fmt.Errorf("legacy: %w", err)
	}
	d, err := New(req.Misc, cf, bf, opts)
	if err != nil {
		cf.Close()
		bf.Close()
		return nil, err
	}
	d.closers = []io.Closer{cf, bf}
	return d, nil
}

// New builds the store over open files: the COW (parsed with the legacy
// merge order) and the base device. It reads the merge state, synthesizes
// the store from num_merge_ops on and prepares the first read-ahead window
// (writing the scratch region, never the base).
func New(name string, cowF, base faultfs.File, opts *Options) (*Device, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	size, err := cowF.Size()
	if err != nil {
		return nil, fmt.Errorf("legacy: size of %s: %w", cowF.Name(), err)
	}
	r, err := cow.NewReader(cowF, size, &cow.ReaderOptions{Path: cowF.Name(), Legacy: true})
	if err != nil {
		return nil, err
	}
	if bs := r.Header().BlockSize; bs != ChunkSize {
		return nil, fmt.Errorf("legacy: %s: block size %d not supported (only %d)", cowF.Name(), bs, ChunkSize)
	}
	order := r.MergeOrder()
	seen := make(map[uint64]int, len(order))
	for i := range order {
		for k := uint64(0); k < order[i].Blocks(); k++ {
			if j, ok := seen[order[i].NewBlock+k]; ok {
				return nil, fmt.Errorf("legacy: %s: merge-order ops %d and %d both write block %d (one exception per chunk)", cowF.Name(), j, i, order[i].NewBlock+k)
			}
			seen[order[i].NewBlock+k] = i
		}
	}
	eng, err := merge.New(cowF, base, r, o.Merge)
	if err != nil {
		return nil, fmt.Errorf("legacy: %s: %w", name, err)
	}
	start := int(r.Header().NumMergeOps)
	lay, err := NewLayout(order, start, eng.ReadAheadOps())
	if err != nil {
		return nil, fmt.Errorf("legacy: %s: %w", cowF.Name(), err)
	}
	if err := eng.StartKernelMerge(); err != nil {
		return nil, fmt.Errorf("legacy: %s: %w", name, err)
	}
	return &Device{name: name, r: r, order: order, eng: eng, start: start, lay: lay}, nil
}

var _ dmuser.Handler = (*Device)(nil)

// OpenAtStart tells the dm-user frontend to open the control node at start:
// libsnapshot creates the dm-user device after init, sized by its reply.
func (d *Device) OpenAtStart() bool { return true }

// Size is the synthesized store's size in bytes.
func (d *Device) Size() int64 { return d.lay.Size() }

// Layout exposes the store (tests, inspection). Its merged count changes
// under the device's lock.
func (d *Device) Layout() *Layout { return d.lay }

// MergeProgress implements the daemon's MergeReporter: num_merge_ops as
// committed (ops inside an uncommitted read-ahead window count once their
// window commits).
func (d *Device) MergeProgress() (merged, total uint64, failed bool) {
	m, t, f := d.eng.MergeProgress()
	d.mu.Lock()
	defer d.mu.Unlock()
	return m, t, f || d.err != nil
}

// Close releases the files opened by Open.
func (d *Device) Close() error {
	var errs []error
	for _, c := range d.closers {
		errs = append(errs, c.Close())
	}
	d.closers = nil
	return errors.Join(errs...)
}

// ReadSectors implements dmuser.Handler: chunk 0 is the disk_header, area
// chunks the current metadata areas, data chunks the target data of their
// exception's op (zeros for skipped chunk ids).
func (d *Device) ReadSectors(p []byte, sector uint64) error {
	size := d.Size()
	if sector > uint64(size)/512 || int64(sector)*512+int64(len(p)) > size {
		return fmt.Errorf("legacy: %s: read of %d bytes at sector %d beyond the store (%d bytes)", d.name, len(p), sector, size)
	}
	off := int64(sector) * 512
	var tmp []byte
	for len(p) > 0 {
		c := uint64(off / ChunkSize)
		in := int(off % ChunkSize)
		n := min(ChunkSize-in, len(p))
		dst := p[:n]
		if in != 0 || n != ChunkSize {
			if tmp == nil {
				tmp = make([]byte, ChunkSize)
			}
			dst = tmp
		}
		if err := d.readChunk(c, dst); err != nil {
			return err
		}
		if len(dst) != n {
			copy(p[:n], dst[in:])
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (d *Device) readChunk(c uint64, p []byte) error {
	switch {
	case c == 0:
		copy(p, AppendHeader(make([]byte, 0, ChunkSize)))
		return nil
	case IsMetadataChunk(c):
		d.mu.Lock()
		d.lay.Area(int(c/Stride), p)
		d.mu.Unlock()
		return nil
	}
	g, ok := d.lay.lookup(c)
	if !ok {
		clear(p) // a skipped chunk id
		return nil
	}
	r := d.lay.refs[g]
	op := &d.order[r.idx]
	if err := d.eng.ReadBlock(op.NewBlock+uint64(r.blk), p); err != nil {
		return fmt.Errorf("legacy: %s: chunk %d (merge-order op %d, %v, block %d): %w", d.name, c, r.idx, op.Type, op.NewBlock+uint64(r.blk), err)
	}
	return nil
}

// WriteSectors implements dmuser.Handler. The kernel writes a metadata area
// after each merge step (with PREFLUSH|FUA, after flushing the origin):
// the step is validated, committed, and only then the store changes. Any
// other write is refused: the snapshot is read-only.
func (d *Device) WriteSectors(p []byte, sector uint64) error {
	if len(p) == 0 {
		return nil // flush
	}
	c := sector / ChunkSectors
	if sector%ChunkSectors != 0 || !IsMetadataChunk(c) {
		return fmt.Errorf("legacy: %s: write of %d bytes at sector %d is not a metadata area (the snapshot is read-only): %w", d.name, len(p), sector, dmuser.ErrReadOnly)
	}
	a := int(c / Stride)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return fmt.Errorf("legacy: %s: merge failed earlier: %w", d.name, d.err)
	}
	step, err := d.lay.Interpret(a, p)
	if err != nil {
		return fmt.Errorf("legacy: %s: %w", d.name, err)
	}
	from, n := d.lay.completedOps(step)
	if step.Spans && (d.lay.Merged() > 0 || d.eng.ReadAheadOps() == 0 || !d.order[d.lay.refs[step.First].idx].Type.IsOrdered()) {
		// Only the first step after a restart inside a read-ahead window
		// may cover later areas; KernelMerged checks it stays in the window.
		return fmt.Errorf("legacy: %s: metadata area %d: exceptions of later areas are not merged yet (%d unmerged): the kernel merges from the last one: %w",
			d.name, a, len(d.lay.exc)-d.lay.Merged(), ErrBadMetadataWrite)
	}
	if n > 0 {
		if want := d.start + d.done; from != want {
			return fmt.Errorf("legacy: %s: metadata area %d completes merge-order op %d, expected op %d: %w", d.name, a, from, want, ErrBadMetadataWrite)
		}
		if _, err := d.eng.KernelMerged(n); err != nil {
			d.err = err
			return fmt.Errorf("legacy: %s: committing %d merged ops: %w", d.name, n, err)
		}
		d.done += n
	}
	d.lay.Apply(step)
	return nil
}

// Flush implements dmuser.Handler: commits are synchronous.
func (d *Device) Flush() error { return nil }

// Discard implements dmuser.Handler.
func (d *Device) Discard(sector, length uint64) error { return dmuser.ErrUnsupported }
