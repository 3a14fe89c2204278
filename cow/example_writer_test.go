package cow_test

import (
	"bytes"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/vabc-go/vabc/cow"
)

// Write a v3 COW (lz4, 64 KiB compression factor) the way update_engine
// does — merge sequence first, copies, a label per install operation,
// Finalize — and read it back.
func ExampleNewWriterV3() {
	dir, err := os.MkdirTemp("", "cow-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	f, err := os.Create(filepath.Join(dir, "system.cow"))
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()

	opts := cow.WriterOptions{MaxBlocks: 1024, CompressionFactor: 64 << 10}
	if err := opts.SetCompression("lz4"); err != nil {
		log.Fatal(err)
	}
	w, err := cow.NewWriterV3(f, opts)
	if err != nil {
		log.Fatal(err)
	}
	newData := bytes.Repeat([]byte("new system image contents "), 20*4096/26+1)[:20*4096]
	steps := []func() error{
		func() error { return w.AddSequenceData([]uint32{5, 6}) }, // merge order of the copies
		func() error { return w.AddCopy(5, 100, 2) },              // blocks 5,6 ← old 100,101
		func() error { return w.AddLabel(0) },
		func() error { return w.AddRawBlocks(10, newData) }, // 20 blocks: units of 16+4
		func() error { return w.AddZeroBlocks(40, 8) },
		func() error { return w.AddLabel(1) },
		w.Finalize,
		w.Close,
	}
	for _, s := range steps {
		if err := s(); err != nil {
			log.Fatal(err)
		}
	}

	r, err := cow.Open(f.Name(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	h := r.Header()
	fmt.Printf("v%d, %v, factor %d, %d ops\n", h.MajorVersion, r.Compression(), h.MaxCompressionSize, h.OpCount)
	for _, op := range r.MergeOrder()[:5] {
		fmt.Printf("%-7v new_block %-3d covers %d blocks\n", op.Type, op.NewBlock, op.Blocks())
	}
	// Output:
	// v3, lz4, factor 65536, 12 ops
	// copy    new_block 5   covers 1 blocks
	// copy    new_block 6   covers 1 blocks
	// replace new_block 10  covers 16 blocks
	// replace new_block 26  covers 4 blocks
	// zero    new_block 40  covers 1 blocks
}
