package snapuserd

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

func TestUnitCache(t *testing.T) {
	const size = 64 << 10
	var units [16][]byte
	for op := range units {
		units[op] = make([]byte, size)
		for i := range units[op] {
			units[op][i] = byte(op*7 + i + i>>8)
		}
	}
	unit := func(op int32, size int) []byte { return units[op][:size] }
	var loads atomic.Int64
	loader := func(op int32, size int) func([]byte) (int, error) {
		return func(buf []byte) (int, error) {
			loads.Add(1)
			return copy(buf, unit(op, size)), nil
		}
	}

	t.Run("hit-miss-evict", func(t *testing.T) {
		c := &unitCache{limit: 3 * size}
		loads.Store(0)
		dst := make([]byte, BlockSize)
		for _, op := range []int32{1, 2, 3, 1, 4, 1, 2} {
			n, err := c.read(op, size, 2*BlockSize, dst, loader(op, size))
			if err != nil || n != size {
				t.Fatalf("op %d: %d, %v", op, n, err)
			}
			if !bytes.Equal(dst, unit(op, size)[2*BlockSize:3*BlockSize]) {
				t.Fatalf("op %d: wrong bytes", op)
			}
		}
		// 1,2,3 load; 1 hits; 4 loads and evicts 2 (LRU); 1 hits; 2 reloads.
		if got := loads.Load(); got != 5 {
			t.Errorf("%d loads, want 5", got)
		}
		if c.used > c.limit {
			t.Errorf("used %d over limit %d", c.used, c.limit)
		}
		if len(c.entries) != 3 {
			t.Errorf("%d entries, want 3", len(c.entries))
		}
	})

	t.Run("short-unit", func(t *testing.T) {
		c := &unitCache{}
		dst := bytes.Repeat([]byte{0xee}, BlockSize)
		n, err := c.read(9, size, size-BlockSize, dst, loader(9, size/2))
		if err != nil || n != size/2 {
			t.Fatalf("%d, %v", n, err)
		}
		if dst[0] != 0xee {
			t.Error("dst written beyond the unit's end")
		}
	})

	t.Run("error-not-cached", func(t *testing.T) {
		c := &unitCache{}
		boom := errors.New("boom")
		dst := make([]byte, BlockSize)
		if _, err := c.read(5, size, 0, dst, func([]byte) (int, error) { return 0, boom }); !errors.Is(err, boom) {
			t.Fatalf("got %v", err)
		}
		if n, err := c.read(5, size, 0, dst, loader(5, size)); err != nil || n != size {
			t.Fatalf("retry after error: %d, %v", n, err)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		c := &unitCache{limit: 4 * size}
		loads.Store(0)
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() {
				dst := make([]byte, BlockSize)
				for k := range 2000 {
					op := int32((g + k*7) % 10)
					at := (k % (size / BlockSize)) * BlockSize
					if _, err := c.read(op, size, at, dst, loader(op, size)); err != nil {
						t.Error(err)
						return
					}
					if !bytes.Equal(dst, unit(op, size)[at:at+BlockSize]) {
						t.Errorf("op %d at %d: wrong bytes", op, at)
						return
					}
				}
			})
		}
		wg.Wait()
		if c.used > c.limit {
			t.Errorf("used %d over limit %d", c.used, c.limit)
		}
		if len(c.free) > maxFree {
			t.Errorf("%d free buffers", len(c.free))
		}
	})

	t.Run("sharded", func(t *testing.T) {
		// 16 units in a budget of 16: two per shard, so a second round
		// of all of them hits, and a 17th op evicts only in its shard.
		var c payloadCache
		c.setLimit(16 * size)
		loads.Store(0)
		dst := make([]byte, BlockSize)
		for round := range 2 {
			for op := range int32(16) {
				if _, err := c.read(op, size, BlockSize, dst, loader(op, size)); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(dst, unit(op, size)[BlockSize:2*BlockSize]) {
					t.Fatalf("round %d op %d: wrong bytes", round, op)
				}
			}
		}
		if got := loads.Load(); got != 16 {
			t.Errorf("%d loads for two rounds of 16 units, want 16", got)
		}
		total := 0
		for i := range c.shards {
			sh := &c.shards[i]
			total += sh.used
			if sh.used > sh.limit {
				t.Errorf("shard %d: used %d over its limit %d", i, sh.used, sh.limit)
			}
		}
		if total > 16*size {
			t.Errorf("shards use %d bytes, budget %d", total, 16*size)
		}
	})
}
