package snapuserd

import "sync"

// unitCacheBytes bounds the decoded COW payloads a Snapshot keeps: Replace
// units (16 at the largest factor of 256 KiB, 64 at AOSP's default of
// 64 KiB) and single-block Replace and Xor payloads. Random reads over a
// unit's blocks then decompress it once instead of once per 4 KiB block,
// and unaligned reads that split a block between requests decompress it
// once, not per request.
const unitCacheBytes = 4 << 20

// cacheShards is how many independent LRUs the budget is split into, by op
// index: concurrent reads of different units (consecutive units are
// consecutive ops) take different locks, and a hit holds its shard's lock
// only for its own copy.
const cacheShards = 8

// payloadCache is the Snapshot's payload cache: cacheShards unitCaches of
// an equal share of the budget.
type payloadCache struct {
	shards [cacheShards]unitCache
}

// setLimit splits a budget of n bytes (unitCacheBytes when n <= 0) over
// the shards. Not safe while reads run.
func (c *payloadCache) setLimit(n int) {
	if n <= 0 {
		n = unitCacheBytes
	}
	for i := range c.shards {
		c.shards[i].limit = max(n/cacheShards, 1)
	}
}

// read is unitCache.read on op's shard.
func (c *payloadCache) read(op int32, size int, at int, dst []byte, load func(buf []byte) (int, error)) (int, error) {
	return c.shards[uint32(op)%cacheShards].read(op, size, at, dst, load)
}

// unitCache is a byte-bounded LRU of decoded payloads keyed by op index.
// Concurrent misses on the same op wait for one decompression instead of
// each doing their own. Data is copied out under the lock, so an evicted
// buffer is never referenced outside the cache and can be reused for the
// next miss.
type unitCache struct {
	mu      sync.Mutex
	entries map[int32]*unitEntry
	head    unitEntry // LRU ring sentinel: head.next is the most recent
	used    int       // bytes of ready entries
	free    [][]byte  // evicted buffers for reuse (at most maxFree)
	limit   int       // byte budget; unitCacheBytes when 0
}

// maxFree bounds the evicted buffers a shard keeps for reuse (memory
// beyond the budget: at most cacheShards×maxFree buffers).
const maxFree = 1

type unitEntry struct {
	op         int32
	data       []byte        // decompressed unit; nil while loading
	ready      chan struct{} // closed when the load finished
	err        error         // load error (the entry is then dropped)
	prev, next *unitEntry
}

func (c *unitCache) init() {
	if c.entries == nil {
		c.entries = map[int32]*unitEntry{}
		c.head.prev, c.head.next = &c.head, &c.head
	}
}

func (c *unitCache) unlink(e *unitEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (c *unitCache) pushFront(e *unitEntry) {
	e.prev, e.next = &c.head, c.head.next
	c.head.next.prev = e
	c.head.next = e
}

// read copies unit op's bytes [at, at+len(dst)) into dst, loading the unit
// with load (into a buffer of at least size bytes) on a miss. It returns the
// unit's length, or load's error. load runs without the lock held.
func (c *unitCache) read(op int32, size int, at int, dst []byte, load func(buf []byte) (int, error)) (int, error) {
	c.mu.Lock()
	c.init()
	for {
		e, ok := c.entries[op]
		if !ok {
			break
		}
		if e.data != nil {
			c.unlink(e)
			c.pushFront(e)
			n := len(e.data)
			if at+len(dst) <= n {
				copy(dst, e.data[at:])
			}
			c.mu.Unlock()
			return n, nil
		}
		// Another worker is decompressing this unit: wait for it.
		ready := e.ready
		c.mu.Unlock()
		<-ready
		if e.err != nil {
			return 0, e.err
		}
		c.mu.Lock()
	}
	e := &unitEntry{op: op, ready: make(chan struct{})}
	c.entries[op] = e
	var buf []byte
	for i, b := range c.free {
		if cap(b) >= size {
			buf = b[:size]
			c.free = append(c.free[:i], c.free[i+1:]...)
			break
		}
	}
	c.mu.Unlock()
	if buf == nil {
		buf = make([]byte, size)
	}

	n, err := load(buf)
	if err == nil && at+len(dst) <= n {
		copy(dst, buf[at:])
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		e.err = err
		delete(c.entries, op)
		c.recycle(buf)
		close(e.ready)
		return 0, err
	}
	e.data = buf[:n]
	close(e.ready)
	c.pushFront(e)
	c.used += cap(buf)
	limit := c.limit
	if limit <= 0 {
		limit = unitCacheBytes
	}
	for c.used > limit && c.head.prev != e {
		old := c.head.prev
		c.unlink(old)
		delete(c.entries, old.op)
		c.used -= cap(old.data)
		c.recycle(old.data)
	}
	return n, nil
}

func (c *unitCache) recycle(b []byte) {
	if len(c.free) < maxFree {
		c.free = append(c.free, b[:0])
	}
}
