package snapuserd_test

import (
	"math/rand/v2"
	"testing"

	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/proto"
)

// BenchmarkReadDuringMerge measures the handler's read path (no transport)
// over an on-disk Virtual A/B partition before the merge and with the merge
// engine prepared (its windows pending: reads go through the engine's read
// path), for sequential 1 MiB and random 4 KiB requests.
func BenchmarkReadDuringMerge(b *testing.B) {
	pairs := sameSizePairs(21, 8192)
	for _, pn := range []string{"shuffled", "random"} { // mostly Copy; mostly Replace
		pair := pairs[pn]
		for _, during := range []bool{false, true} {
			name := pn + "/before"
			if during {
				name = pn + "/during"
			}
			b.Run(name, func(b *testing.B) {
				p := newVABPart(b, b.TempDir(), "system", pair, 3, false)
				s, err := snapuserd.OpenSnapshot(proto.InitRequest{Misc: p.misc, Cow: p.cow, Backing: p.base, BasePath: p.base}, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				if during {
					_, release, err := s.PrepareMerge(nil)
					if err != nil {
						b.Fatal(err)
					}
					defer release()
				}
				b.Run("seq-1MiB", func(b *testing.B) {
					buf := make([]byte, 1<<20)
					b.SetBytes(int64(len(p.target)))
					for range b.N {
						for off := 0; off+len(buf) <= len(p.target); off += len(buf) {
							if err := s.ReadSectors(buf, uint64(off/512)); err != nil {
								b.Fatal(err)
							}
						}
					}
				})
				b.Run("random-4KiB", func(b *testing.B) {
					buf := make([]byte, snapuserd.BlockSize)
					r := rand.New(rand.NewPCG(1, 2))
					b.SetBytes(int64(len(buf)))
					for range b.N {
						blk := r.IntN(len(p.target) / snapuserd.BlockSize)
						if err := s.ReadSectors(buf, uint64(blk*snapuserd.BlockSize/512)); err != nil {
							b.Fatal(err)
						}
					}
				})
			})
		}
	}
}
