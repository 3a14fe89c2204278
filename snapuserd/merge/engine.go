package merge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
)

// ErrCorrupt marks on-disk merge state (header, scratch region) that breaks
// the merge invariants, and merge orders the engine cannot apply.
var ErrCorrupt = errors.New("merge: inconsistent merge state")

// ErrUnsafe is returned by New for a COW without scratch region whose
// ordered ops include one that overwrites its own source (an Xor op at the
// same block): after an interruption it could not be replayed correctly, as
// the source would already hold the result. Options.AllowUnsafeInPlace
// merges such COWs anyway (AOSP's behaviour).
var ErrUnsafe = errors.New("merge: merge cannot be made crash-safe")

// ErrFailed is returned by ReadBlock for blocks of a window the merge
// failed on, and by Run after an earlier failure.
var ErrFailed = errors.New("merge: merge failed")

// Engine merges one COW into its base device.
type Engine struct {
	cowF, base faultfs.File
	backing    faultfs.File // where Copy/Xor sources are read: Options.Backing or base
	src        Source
	opts       Options
	logf       func(string, ...any)

	hdr        cow.Header
	page       []byte // header bytes as on disk (+ state byte with scratch)
	scratch    cow.ScratchLayout
	hasScratch bool
	bs         int64
	baseBlocks uint64

	order    []cow.Op
	nOrdered int
	winCap   int

	// block lookup for ReadBlock: extents sorted by NewBlock, the last op
	// in merge order winning for a destination.
	extents []extent

	ring     ringWriter // io_uring for window writes, nil = synchronous
	baseFD   int
	uringOps atomic.Int64
	uringErr error // why io_uring was given up

	rring      ringWriter // the read-ahead's io_uring for source reads, nil = pread
	backingFD  int
	uringReads atomic.Int64

	replMu   sync.Mutex // cache of the last decompressed Replace op
	replIdx  int
	replData []byte

	mu      sync.Mutex
	cond    *sync.Cond
	windows []*window // phase-1 windows of this run, from firstWin on
	merged  uint64    // durable num_merge_ops
	phase   Phase
	err     error
	started bool
	paused  bool
	parked  bool
	curWin  int
	kernel  bool // kernel-driven merge (kernel.go): StartKernelMerge was called
	kdone   int  // merge-order ops the kernel merged so far (kernel.go)
}

type extent struct {
	block  uint64 // first destination block
	blocks uint64
	idx    int // merge-order index
}

type window struct {
	start, n    int
	state       WindowState
	refs        int    // readers reading this window's sources from base
	buf         []byte // n blocks of target data once RA_READY
	fromScratch bool
}

// New prepares a merge of the COW in cowFile (parsed as src) into base. It
// reads the merge state from the COW header and scratch region; if a window
// was persisted but not committed (read_ahead_state 2), it is validated and
// loaded for replay, so that ReadBlock serves it at once. New writes nothing.
func New(cowFile, base faultfs.File, src Source, opts *Options) (*Engine, error) {
	e := &Engine{cowF: cowFile, base: base, src: src, curWin: -1, replIdx: -1}
	if opts != nil {
		e.opts = *opts
	}
	e.logf = e.opts.Logf
	if e.logf == nil {
		e.logf = func(string, ...any) {}
	}
	e.cond = sync.NewCond(&e.mu)
	hdr, err := readHeader(cowFile)
	if err != nil {
		return nil, err
	}
	e.hdr = hdr
	if hdr.BlockSize != cow.DefaultBlockSize {
		return nil, fmt.Errorf("merge: %s: block_size %d, snapuserd requires %d: %w",
			cowFile.Name(), hdr.BlockSize, cow.DefaultBlockSize, cow.ErrUnsupported)
	}
	e.bs = int64(hdr.BlockSize)
	e.scratch, e.hasScratch = hdr.Scratch()
	e.order = src.MergeOrder()
	var sc *cow.Scratch
	if e.hasScratch {
		if sc, err = readScratch(cowFile, &hdr, e.order); err != nil {
			return nil, err
		}
	}
	pageLen := int(hdr.HeaderSize)
	if e.hasScratch {
		pageLen++
	}
	e.page = make([]byte, pageLen)
	if err := faultfs.ReadFull(cowFile, e.page, 0); err != nil {
		return nil, fmt.Errorf("merge: reading header page: %w", err)
	}
	bsize, err := base.Size()
	if err != nil {
		return nil, fmt.Errorf("merge: size of %s: %w", base.Name(), err)
	}
	e.baseBlocks = uint64(bsize) / uint64(e.bs)
	e.backing = base
	srcSize := bsize
	if e.opts.Backing != nil {
		e.backing = e.opts.Backing
		if srcSize, err = e.backing.Size(); err != nil {
			return nil, fmt.Errorf("merge: size of %s: %w", e.backing.Name(), err)
		}
	}

	if err := e.validateOrder(srcSize); err != nil {
		return nil, err
	}
	e.winCap = DefaultWindowBlocks
	if e.hasScratch {
		e.winCap = sc.Capacity
	}
	if w := e.opts.WindowBlocks; w > 0 {
		if w > e.winCap {
			return nil, fmt.Errorf("merge: WindowBlocks %d exceeds the scratch capacity %d", w, e.winCap)
		}
		e.winCap = w
	}
	e.merged = hdr.NumMergeOps
	total := uint64(len(e.order))
	if e.merged > total {
		return nil, fmt.Errorf("merge: %s: num_merge_ops %d exceeds %d data ops: %w",
			cowFile.Name(), e.merged, total, ErrCorrupt)
	}
	if e.merged == total {
		e.phase = PhaseComplete
	}
	var first *window
	if sc != nil && sc.State == cow.ReadAheadDone {
		if first, err = e.loadScratchWindow(sc.Entries); err != nil {
			return nil, err
		}
	}
	e.buildWindows(first)
	e.buildExtents()
	return e, nil
}

// ioErrReader remembers the last I/O error, so that an I/O failure under
// cow.ReadHeader (which reports it as corruption, as text) is returned as
// the I/O error it is.
type ioErrReader struct {
	r   io.ReaderAt
	err error
}

func (r *ioErrReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.r.ReadAt(p, off)
	if err != nil && !errors.Is(err, io.EOF) {
		r.err = err
	}
	return n, err
}

func readHeader(f faultfs.File) (cow.Header, error) {
	r := &ioErrReader{r: f}
	hdr, err := cow.ReadHeader(r)
	if r.err != nil {
		return hdr, fmt.Errorf("merge: reading the header of %s: %w", f.Name(), r.err)
	}
	if err != nil {
		return hdr, fmt.Errorf("merge: %s: %w", f.Name(), err)
	}
	return hdr, nil
}

// readScratch decodes the scratch region with the one decoder every reader
// of it uses (cow.ReadScratch); a violation is also ErrCorrupt.
func readScratch(f faultfs.File, h *cow.Header, order []cow.Op) (*cow.Scratch, error) {
	size, err := f.Size()
	if err != nil {
		return nil, fmt.Errorf("merge: size of %s: %w", f.Name(), err)
	}
	sc, err := cow.ReadScratch(f, size, h, order, f.Name())
	switch {
	case err == nil:
		return sc, nil
	case errors.Is(err, cow.ErrCorrupt):
		return sc, fmt.Errorf("merge: %w: %w", err, ErrCorrupt)
	default:
		return sc, fmt.Errorf("merge: %w", err)
	}
}

// validateOrder checks every op can be merged: known data types, ordered ops
// first, destinations inside the base device and sources inside the source
// device (srcSize bytes).
func (e *Engine) validateOrder(srcSize int64) error {
	bad := func(i int, op *cow.Op, msg string) error {
		return fmt.Errorf("merge: %s: merge-order op %d (%s): %s: %w", e.cowF.Name(), i, op, msg, ErrCorrupt)
	}
	e.nOrdered = 0
	for e.nOrdered < len(e.order) && e.order[e.nOrdered].Type.IsOrdered() {
		e.nOrdered++
	}
	// Blocks written by earlier ordered ops: no later op may read them
	// (VerifyMergeOps' rule; the read-ahead windows depend on it).
	written := make(map[uint64]int, e.nOrdered)
	for i := range e.order {
		op := &e.order[i]
		switch op.Type {
		case cow.OpCopy, cow.OpXor:
			if i >= e.nOrdered {
				return bad(i, op, "ordered op after a Replace/Zero op")
			}
			if op.FactorShift != 0 {
				return bad(i, op, "ordered op with a compression factor")
			}
		case cow.OpReplace, cow.OpZero:
		default:
			return bad(i, op, "not a data op")
		}
		if op.NewBlock > e.baseBlocks || op.Blocks() > e.baseBlocks-op.NewBlock {
			return bad(i, op, fmt.Sprintf("destination past the end of %s (%d blocks)", e.base.Name(), e.baseBlocks))
		}
		if op.Type.IsOrdered() {
			a, b, _ := e.srcBlocks(op)
			for _, sb := range []uint64{a, b} {
				if j, ok := written[sb]; ok {
					return bad(i, op, fmt.Sprintf("reads block %d, which merge-order op %d already overwrote", sb, j))
				}
			}
		}
		switch op.Type {
		case cow.OpCopy:
			if op.Source >= uint64(srcSize)/uint64(e.bs) {
				return bad(i, op, fmt.Sprintf("source block past the end of %s (%d bytes)", e.backing.Name(), srcSize))
			}
		case cow.OpXor:
			if op.Source > uint64(srcSize) || uint64(srcSize)-op.Source < uint64(e.bs) {
				return bad(i, op, fmt.Sprintf("source bytes past the end of %s (%d bytes)", e.backing.Name(), srcSize))
			}
			if a, b, _ := e.srcBlocks(op); !e.hasScratch && !e.opts.AllowUnsafeInPlace && (op.NewBlock == a || op.NewBlock == b) {
				return fmt.Errorf("merge: %s: merge-order op %d (%s) overwrites its own source and the COW has no scratch region "+
					"(buffer_size 0), so an interrupted merge would apply it twice: %w", e.cowF.Name(), i, op, ErrUnsafe)
			}
		}
		if op.Type.IsOrdered() {
			written[op.NewBlock] = i
		}
	}
	return nil
}

// srcOff is the byte offset an ordered op reads on the source device.
func (e *Engine) srcOff(op *cow.Op) int64 {
	if op.Type == cow.OpXor {
		return int64(op.Source)
	}
	return int64(op.Source) * e.bs
}

// srcBlocks are the blocks an ordered op reads (one, or two when unaligned).
func (e *Engine) srcBlocks(op *cow.Op) (uint64, uint64, bool) {
	off := e.srcOff(op)
	b := uint64(off / e.bs)
	if off%e.bs != 0 {
		return b, b + 1, true
	}
	return b, b, false
}

// buildWindows splits the unmerged ordered ops into windows. first, if set,
// is the window recovered from the scratch region.
func (e *Engine) buildWindows(first *window) {
	i := int(e.merged)
	if first != nil {
		e.windows = append(e.windows, first)
		i = first.start + first.n
	}
	for i < e.nOrdered {
		n := e.windowLen(i)
		e.windows = append(e.windows, &window{start: i, n: n})
		i += n
	}
}

// windowLen is the size of the window starting at merge index i. With a
// scratch region it is the capacity (AOSP). Without one the window also ends
// before an op whose destination is a source of an earlier op of the window,
// so that an uncommitted window never destroys its own sources.
func (e *Engine) windowLen(i int) int {
	n := min(e.winCap, e.nOrdered-i)
	if e.hasScratch {
		return n
	}
	srcs := make(map[uint64]bool)
	for k := 0; k < n; k++ {
		op := &e.order[i+k]
		if k > 0 && srcs[op.NewBlock] {
			return k
		}
		a, b, _ := e.srcBlocks(op)
		srcs[a], srcs[b] = true, true
	}
	return n
}

func (e *Engine) buildExtents() {
	ex := make([]extent, 0, len(e.order))
	for i := range e.order {
		op := &e.order[i]
		ex = append(ex, extent{block: op.NewBlock, blocks: op.Blocks(), idx: i})
	}
	sort.SliceStable(ex, func(a, b int) bool { return ex[a].block < ex[b].block })
	// Keep the last op in merge order for equal destinations.
	out := ex[:0]
	for _, x := range ex {
		if n := len(out); n > 0 && out[n-1].block == x.block {
			if x.idx > out[n-1].idx {
				out[n-1] = x
			}
			continue
		}
		out = append(out, x)
	}
	e.extents = out
}

// lookup returns the merge index of the op that produces target block b and
// whether there is one.
func (e *Engine) lookup(b uint64) (int, bool) {
	j := sort.Search(len(e.extents), func(k int) bool { return e.extents[k].block > b }) - 1
	best := -1
	// A multi-block Replace covers up to 128 blocks (factor shift < 8).
	for k := j; k >= 0 && e.extents[k].block+128 > b; k-- {
		x := e.extents[k]
		if b < x.block+x.blocks && x.idx > best {
			best = x.idx
		}
	}
	return best, best >= 0
}

// Header returns the COW header as read by New (num_merge_ops as it was then).
func (e *Engine) Header() cow.Header { return e.hdr }

// TotalOps is num_total_data_ops.
func (e *Engine) TotalOps() uint64 { return uint64(len(e.order)) }

// Progress reports the engine's state.
func (e *Engine) Progress() Progress {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := Progress{
		Phase:       e.phase,
		Status:      e.phase.Status(),
		NumMergeOps: e.merged,
		TotalOps:    uint64(len(e.order)),
		Paused:      e.paused,
		Parked:      e.parked,
		Window:      e.curWin,
		Windows:     len(e.windows),
		Err:         e.err,
	}
	if p.TotalOps == 0 {
		p.Percent = 100
	} else {
		p.Percent = float64(p.NumMergeOps) * 100 / float64(p.TotalOps)
	}
	return p
}

// Status is the getstatus reply for this partition.
func (e *Engine) Status() string { return e.Progress().Status }

// Pause asks the merge to park at the next safe point (after a window
// commit, before the scratch region is overwritten, after a Replace run).
func (e *Engine) Pause() {
	e.mu.Lock()
	e.paused = true
	e.mu.Unlock()
}

// Resume lets a paused merge continue.
func (e *Engine) Resume() {
	e.mu.Lock()
	e.paused = false
	e.cond.Broadcast()
	e.mu.Unlock()
}

// waitLocked waits on the engine's condition until cond() holds or ctx ends.
func (e *Engine) waitLocked(ctx context.Context, cond func() bool) error {
	if cond() {
		return nil
	}
	stop := context.AfterFunc(ctx, func() {
		e.mu.Lock()
		e.cond.Broadcast()
		e.mu.Unlock()
	})
	defer stop()
	for !cond() {
		if err := ctx.Err(); err != nil {
			return err
		}
		e.cond.Wait()
	}
	return nil
}

// safePoint parks while paused and reports cancellation.
func (e *Engine) safePoint(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	e.parked = e.paused
	err := e.waitLocked(ctx, func() bool { return !e.paused })
	e.parked = false
	return err
}

// Run performs the merge (initiate_merge) and returns when it is complete,
// failed, or ctx is cancelled. On cancellation the on-disk state is
// consistent and a new Engine resumes it. Run may be called once.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.started {
		e.mu.Unlock()
		return errors.New("merge: Run called twice")
	}
	e.started = true
	if e.phase == PhaseComplete {
		e.mu.Unlock()
		return nil
	}
	e.phase = PhaseQueued
	e.mu.Unlock()

	if l := e.opts.Limiter; l != nil {
		if err := l.acquire(ctx); err != nil {
			e.setPhase(PhaseIdle)
			return err
		}
		defer l.release()
	}
	var err error
	if e.opts.Nice != 0 {
		// Lower the priority of a dedicated thread; it is never unlocked,
		// so the thread exits with the goroutine instead of returning to
		// the pool with the lower priority.
		done := make(chan error, 1)
		go func() {
			runtime.LockOSThread()
			if perr := setThreadNice(e.opts.Nice); perr != nil {
				e.logf("merge: setpriority(%d): %v", e.opts.Nice, perr)
			}
			done <- e.run(ctx)
		}()
		err = <-done
	} else {
		err = e.run(ctx)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case err == nil:
		e.phase = PhaseComplete
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		e.phase = PhaseIdle
	default:
		e.phase = PhaseFailed
		e.err = err
		if e.curWin >= 0 && e.curWin < len(e.windows) {
			if w := e.windows[e.curWin]; w.state != WindowCompleted {
				w.state = WindowFailed
				w.buf = nil
			}
		}
		e.cond.Broadcast()
	}
	e.curWin = -1
	return err
}

func (e *Engine) setPhase(p Phase) {
	e.mu.Lock()
	e.phase = p
	e.mu.Unlock()
}

func (e *Engine) run(ctx context.Context) error {
	if e.opts.IOUring {
		e.setupURing()
		defer func() {
			e.mu.Lock()
			if e.ring != nil {
				e.ring.close()
				e.ring = nil
			}
			if e.rring != nil {
				e.rring.close()
				e.rring = nil
			}
			e.mu.Unlock()
		}()
	}
	if len(e.windows) > 0 {
		e.setPhase(PhaseOrdered)
		e.logf("merge: %s: ordered phase, %d windows from op %d", e.cowF.Name(), len(e.windows), e.windows[0].start)
		pf := e.newPrefetcher()
		defer pf.wait()
		for wi := range e.windows {
			if err := e.mergeWindow(ctx, wi, pf); err != nil {
				return err
			}
		}
	}
	e.setPhase(PhaseReplace)
	return e.mergeReplace(ctx)
}

// ringWriter submits a batch of window writes, linked in order, optionally
// ended by a drained fsync, or a batch of independent reads (*uring; tests
// substitute a model).
type ringWriter interface {
	writeBatch(fd int, ws []uringWrite, fsync bool) error
	readBatch(fd int, rs []uringWrite) error
	close()
}

// testNewRing, if set by a test, replaces the kernel io_uring with a model
// over the base file, so that the io_uring path runs under the power-loss
// model of internal/faultfs.
var testNewRing func(base faultfs.File) ringWriter

// setupURing enables io_uring for window writes when the base is an OS
// file and the kernel allows it, and for the read-ahead's source reads when
// the source device is one too; otherwise it records why not.
func (e *Engine) setupURing() {
	if testNewRing != nil {
		e.mu.Lock()
		e.ring, e.baseFD = testNewRing(e.base), -1
		e.rring, e.backingFD = testNewRing(e.backing), -1
		e.mu.Unlock()
		return
	}
	of, ok := e.base.(*faultfs.OSFile)
	if !ok {
		e.uringErr = fmt.Errorf("io_uring: %s is not an OS file", e.base.Name())
		return
	}
	r, err := newURing()
	if err != nil {
		e.logf("merge: %v; using synchronous I/O", err)
		e.uringErr = err
		return
	}
	e.mu.Lock()
	e.ring, e.baseFD = r, int(of.OS().Fd())
	e.mu.Unlock()
	bf, ok := e.backing.(*faultfs.OSFile)
	if !ok {
		return
	}
	rr, err := newURing()
	if err != nil {
		e.logf("merge: read-ahead: %v; using pread", err)
		return
	}
	e.mu.Lock()
	e.rring, e.backingFD = rr, int(bf.OS().Fd())
	e.mu.Unlock()
}

// dropReadRing gives up the read-ahead's io_uring after err (its reads were
// redone with pread).
func (e *Engine) dropReadRing(err error) {
	e.logf("merge: %s: io_uring read failed, falling back to pread: %v", e.cowF.Name(), err)
	e.mu.Lock()
	if e.rring != nil {
		e.rring.close()
		e.rring = nil
	}
	if e.uringErr == nil {
		e.uringErr = err
	}
	e.mu.Unlock()
}

// IOURing reports how many merge writes went through io_uring and, if
// io_uring was requested but is not (or no longer) used for the writes or
// the source reads, why. IOURingReads counts the reads.
func (e *Engine) IOURing() (writes int64, fallback error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.uringOps.Load(), e.uringErr
}

// IOURingReads reports how many source reads of the read-ahead went
// through io_uring.
func (e *Engine) IOURingReads() int64 { return e.uringReads.Load() }
