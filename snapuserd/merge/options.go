package merge

import (
	"context"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
)

// Source is what the engine needs from a parsed COW: the final merge order
// (cow-format.md §4.3, all data ops, from index 0 — not only the unmerged
// ones) and payload access. *cow.Reader implements it.
type Source interface {
	MergeOrder() []cow.Op
	// ReadData decodes op's payload (block_size<<k bytes for Replace, one
	// block for Xor) into buf, skipping ignoreBytes of decoded output.
	ReadData(op *cow.Op, buf []byte, ignoreBytes int) (int, error)
}

// Defaults (snapuserd.md §5, §7).
const (
	// ReplaceRunBlocks caps a Replace/Zero run: 256 blocks = 1 MiB.
	ReplaceRunBlocks = 256
	// ReplaceCommitBlocks: the Replace/Zero phase syncs the base and commits
	// num_merge_ops after at least this many blocks (8 MiB) were written
	// since the last commit, and at its end. The ops are independent and
	// replaying merged ones after a crash is harmless, so any interval is a
	// state AOSP resumes from; AOSP's daemon has used 256 ops, 512 ops (2 MiB),
	// 2048 and 8192 ops over its releases. 8 MiB keeps the barrier cost
	// small against the data written while the durable progress still
	// moves in steps of a fraction of a second.
	ReplaceCommitBlocks = 2048
	// DefaultWindowBlocks is the window size of COWs without scratch: the
	// capacity a default 2 MiB buffer would have.
	DefaultWindowBlocks = (cow.BufferRegionDefaultSize - cow.BufferRegionDefaultSize*cow.ScratchEntrySize/cow.DefaultBlockSize) / cow.DefaultBlockSize
	// DefaultMergeThreads is ro.virtual_ab.num_merge_threads' default.
	DefaultMergeThreads = 2
	// BackgroundNice is ANDROID_PRIORITY_BACKGROUND.
	BackgroundNice = 10
	// uringDepth is the io_uring queue depth of merge writes.
	uringDepth = 8
)

// Options tune an Engine. The zero value (or nil) is valid and matches AOSP.
type Options struct {
	// MergeSize caps ops per source read / merge write run
	// (cow_op_merge_size; 0 = uncapped).
	MergeSize int
	// WindowBlocks overrides the window size; it may only be smaller than the
	// scratch capacity. 0 = scratch capacity (510), or DefaultWindowBlocks
	// without scratch. AOSP always uses the capacity; smaller windows are for
	// tests.
	WindowBlocks int
	// Backing, if set, is the source device (init's backing_device,
	// libsnapshot's <part>-src: the old slot's extents) that Copy and Xor
	// sources are read from, as AOSP's read-ahead does; the engine never
	// writes, syncs or truncates it. nil means the base device itself. The
	// two may share physical blocks (<part>-src and <part>-base over the
	// same super extents), so every in-place protection applies either way.
	Backing faultfs.File
	// Limiter, if set, bounds how many engines merge at once.
	Limiter *Limiter
	// Nice, if non-zero, is the nice value of the merge thread (Linux
	// setpriority on the thread; BackgroundNice for AOSP's default).
	Nice int
	// AllowUnsafeInPlace merges COWs without scratch region even if an
	// ordered op overwrites its own source (see ErrUnsafe); an interrupted
	// merge of such a COW may then corrupt that block, as in AOSP.
	AllowUnsafeInPlace bool
	// IOUring sends window writes (and their fsync) through io_uring when
	// the base is a *faultfs.OSFile and the kernel supports it (-io_uring,
	// ro.virtual_ab.io_uring.enabled). Any io_uring error falls back to
	// synchronous I/O for the rest of the merge; the on-disk result is
	// identical either way.
	IOUring bool
	// OnCheckpoint is called synchronously after every durable state change
	// (tests, progress logging). It must not call back into the engine's
	// Run; ReadBlock and Progress are fine.
	OnCheckpoint func(Checkpoint)
	// Logf, if set, receives progress lines.
	Logf func(format string, args ...any)

	// replaceCommitBlocks overrides ReplaceCommitBlocks (tests: small
	// images get several Replace commits).
	replaceCommitBlocks int
}

// CheckpointKind says which durable state change happened.
type CheckpointKind uint8

const (
	// WindowPersisted: scratch data synced and read_ahead_state = 2 synced;
	// no base write of the window has happened yet.
	WindowPersisted CheckpointKind = iota + 1
	// WindowCommitted: base synced, num_merge_ops advanced past the window
	// (and read_ahead_state = 1 with scratch).
	WindowCommitted
	// ReplaceCommitted: base synced, num_merge_ops advanced over Replace/Zero ops.
	ReplaceCommitted
)

var checkpointNames = [...]string{"", "window-persisted", "window-committed", "replace-committed"}

func (k CheckpointKind) String() string {
	if int(k) < len(checkpointNames) && k != 0 {
		return checkpointNames[k]
	}
	return "checkpoint(?)"
}

// Checkpoint describes one durable state change.
type Checkpoint struct {
	Kind        CheckpointKind
	NumMergeOps uint64 // num_merge_ops now on disk
	Start       uint64 // first merge-order index of the window / run group
	Ops         int    // ops in the window / committed by this checkpoint
}

// Limiter bounds concurrent merges (ro.virtual_ab.num_merge_threads).
// Waiting engines get slots as they free up (roughly in the order they asked).
type Limiter struct{ ch chan struct{} }

// NewLimiter returns a limiter with n slots (n < 1 means DefaultMergeThreads).
func NewLimiter(n int) *Limiter {
	if n < 1 {
		n = DefaultMergeThreads
	}
	return &Limiter{ch: make(chan struct{}, n)}
}

func (l *Limiter) acquire(ctx context.Context) error {
	select {
	case l.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *Limiter) release() { <-l.ch }
