package snapuserd_test

import (
	"bytes"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/snapuserdtest"
)

// FuzzSnapshotRead feeds arbitrary COW bytes to the read path: building the
// index and reading the whole device must return data or an error, never
// panic or hang.
func FuzzSnapshotRead(f *testing.F) {
	for _, spec := range []snapuserdtest.TripleSpec{
		{Version: 2, Comp: cow.CompressionNone, Blocks: 24, Seed: 1, NoScratch: true},
		{Version: 2, Comp: cow.CompressionGz, Blocks: 24, Seed: 2, NoScratch: true},
		{Version: 3, Comp: cow.CompressionLz4, Factor: 16 << 10, Blocks: 24, Seed: 3, NoScratch: true},
	} {
		tr := snapuserdtest.GenTriple(f, spec)
		f.Add(tr.Cow)
	}
	src := bytes.Repeat([]byte("source--"), 24*4096/8)
	base := bytes.Repeat([]byte("base----"), 24*4096/8)
	f.Fuzz(func(t *testing.T, c []byte) {
		s, err := snapuserd.NewSnapshot("f", bytes.NewReader(c), int64(len(c)), bytes.NewReader(src),
			bytes.NewReader(base), int64(len(base)), "f.cow")
		if err != nil {
			return
		}
		buf := make([]byte, len(base))
		_ = s.ReadSectors(buf, 0)
		_ = s.ReadSectors(buf[:1536], 3)
	})
}
