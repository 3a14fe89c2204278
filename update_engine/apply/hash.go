package apply

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"math"
	"sort"
	"sync"

	"github.com/vabc-go/vabc/update_engine/metadata"
)

// prefixHasher hashes an image while its operations still run: an op's
// destination bytes are final once it has finished, so everything below
// the lowest destination offset of the unfinished ops can be hashed. The
// image is read back from the file (page cache) in its own goroutine,
// overlapping the final SHA-256 with the decoding instead of adding it at
// the end. It is used only when nothing rewrites the image after the ops
// (no hash tree or FEC to regenerate).
type prefixHasher struct {
	mu       sync.Mutex
	cond     *sync.Cond
	order    []int   // op indices by lowest destination offset
	low      []int64 // lowest destination byte of op i (MaxInt64: none)
	finished []bool
	next     int   // order[next] is the first unfinished op in that order
	frontier int64 // bytes [0, frontier) are final
	stopped  bool

	size int64
	h    hash.Hash
	done chan error // the hasher's result once it reached size or stopped
}

func newPrefixHasher(ctx context.Context, r io.ReaderAt, pu *metadata.PartitionUpdate, bs, size int64) *prefixHasher {
	n := len(pu.Operations)
	ph := &prefixHasher{low: make([]int64, n), finished: make([]bool, n), order: make([]int, n),
		size: size, h: sha256.New(), done: make(chan error, 1)}
	ph.cond = sync.NewCond(&ph.mu)
	for i, op := range pu.Operations {
		ph.order[i] = i
		ph.low[i] = math.MaxInt64
		for _, e := range op.DstExtents {
			if e.GetStartBlock() != math.MaxUint64 && e.GetNumBlocks() > 0 {
				ph.low[i] = min(ph.low[i], int64(e.GetStartBlock())*bs)
			}
		}
	}
	sort.SliceStable(ph.order, func(a, b int) bool { return ph.low[ph.order[a]] < ph.low[ph.order[b]] })
	ph.advance()
	stop := context.AfterFunc(ctx, ph.stop)
	go func() {
		defer stop()
		ph.done <- ph.run(ctx, r)
	}()
	return ph
}

// advance moves the frontier past finished ops; mu is held.
func (ph *prefixHasher) advance() {
	for ph.next < len(ph.order) && ph.finished[ph.order[ph.next]] {
		ph.next++
	}
	if ph.next == len(ph.order) {
		ph.frontier = ph.size
	} else {
		ph.frontier = min(ph.low[ph.order[ph.next]], ph.size)
	}
}

// finish records that op i has written all of its destination.
func (ph *prefixHasher) finish(i int) {
	ph.mu.Lock()
	ph.finished[i] = true
	old := ph.frontier
	ph.advance()
	if ph.frontier != old {
		ph.cond.Broadcast()
	}
	ph.mu.Unlock()
}

func (ph *prefixHasher) stop() {
	ph.mu.Lock()
	ph.stopped = true
	ph.cond.Broadcast()
	ph.mu.Unlock()
}

func (ph *prefixHasher) run(ctx context.Context, r io.ReaderAt) error {
	buf := make([]byte, 1<<20)
	var off int64
	for off < ph.size {
		ph.mu.Lock()
		for ph.frontier <= off && !ph.stopped {
			ph.cond.Wait()
		}
		end, stopped := ph.frontier, ph.stopped
		ph.mu.Unlock()
		if stopped {
			if err := context.Cause(ctx); err != nil {
				return err
			}
			return fmt.Errorf("hashing stopped at byte %d", off)
		}
		for off < end {
			// A frontier can jump by gigabytes at once (one ZERO op over
			// the whole image): stop between reads, not only between
			// frontier moves, so a signal ends the job within a second.
			if err := context.Cause(ctx); err != nil {
				return err
			}
			k := min(int64(len(buf)), end-off)
			n, err := r.ReadAt(buf[:k], off)
			ph.h.Write(buf[:n])
			off += int64(n)
			if err != nil && !(err == io.EOF && int64(n) == k) {
				return fmt.Errorf("hashing image at byte %d: %w", off, err)
			}
		}
	}
	return nil
}

// sum waits for the whole image to be hashed.
func (ph *prefixHasher) sum() ([]byte, error) {
	if err := <-ph.done; err != nil {
		return nil, err
	}
	return ph.h.Sum(nil), nil
}
