package snapuserd_test

import (
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/snapuserdtest"
)

// BenchmarkSnapshotRead measures the handler's read path alone (no
// transport) on a 32 MiB lz4 v3 triple with 64 KiB units: sequential 1 MiB
// requests and random aligned 4 KiB requests.
func BenchmarkSnapshotRead(b *testing.B) {
	tr := snapuserdtest.GenTriple(b, snapuserdtest.TripleSpec{Version: 3, Comp: cow.CompressionLz4, Factor: 64 << 10, Blocks: 8192, Seed: 5})
	s := snapshotOf(b, tr)
	b.Run("seq-1MiB", func(b *testing.B) {
		p := make([]byte, 1<<20)
		b.SetBytes(int64(len(tr.Target)))
		for range b.N {
			for off := 0; off < len(tr.Target); off += len(p) {
				if err := s.ReadSectors(p, uint64(off/512)); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("random-4KiB", func(b *testing.B) {
		p := make([]byte, snapuserd.BlockSize)
		r := rand.New(rand.NewPCG(1, 2))
		b.SetBytes(int64(len(p)))
		for range b.N {
			blk := r.IntN(len(tr.Target) / snapuserd.BlockSize)
			if err := s.ReadSectors(p, uint64(blk*snapuserd.BlockSize/512)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("random-4KiB-hot-parallel", func(b *testing.B) {
		// Random 4 KiB reads from every core over 2 MiB whose units stay
		// in the payload cache: the cost of a cache hit under concurrency.
		const hot = 2 << 20
		b.SetBytes(snapuserd.BlockSize)
		var seed atomic.Uint64
		b.RunParallel(func(pb *testing.PB) {
			p := make([]byte, snapuserd.BlockSize)
			r := rand.New(rand.NewPCG(seed.Add(1), 2))
			for pb.Next() {
				blk := r.IntN(hot / snapuserd.BlockSize)
				if err := s.ReadSectors(p, uint64(blk*snapuserd.BlockSize/512)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
