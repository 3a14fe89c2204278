package ops

import (
	"context"
	"sync"
)

// Budget is a counting semaphore over bytes: the appliers (extract and the
// VABC writer) acquire an operation's buffer cost before computing it and
// release it once the result is written, so the memory held by operations
// in flight stays bounded whatever the payload's op sizes.
type Budget struct {
	mu    sync.Mutex
	cond  *sync.Cond
	avail int64
}

// NewBudget returns a Budget of n bytes.
func NewBudget(n int64) *Budget {
	b := &Budget{avail: n}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// Acquire waits until n bytes are available and takes them; it returns
// false, taking nothing, once ctx ends.
func (b *Budget) Acquire(ctx context.Context, n int64) bool {
	if n == 0 {
		return ctx.Err() == nil
	}
	stop := context.AfterFunc(ctx, func() {
		b.mu.Lock()
		b.cond.Broadcast()
		b.mu.Unlock()
	})
	defer stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.avail < n {
		if ctx.Err() != nil {
			return false
		}
		b.cond.Wait()
	}
	b.avail -= n
	return true
}

// Release returns n bytes taken by Acquire.
func (b *Budget) Release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.avail += n
	b.cond.Broadcast()
	b.mu.Unlock()
}
