package vabc

import (
	"fmt"
	"testing"

	"github.com/vabc-go/vabc/cow"

	"github.com/vabc-go/vabc/testdata/imagegen"
	"github.com/vabc-go/vabc/update_engine/generate"
)

// BenchmarkWrite writes the COW of an incremental payload (16 MiB mixed
// image pair, lz4, XOR) with 1 and 2 threads, with and without the fsync of
// each label.
func BenchmarkWrite(b *testing.B) {
	old, nw, err := imagegen.Raw(imagegen.Mixed, 5, 4096)
	if err != nil {
		b.Fatal(err)
	}
	tp := makePayload(b, []imagegen.Pair{{Name: "system", Old: old, New: nw}}, false, &generate.VABC{CowVersion: 3, Compression: "lz4", CompressionFactor: 64 << 10, XOR: true}, 0)
	for _, threads := range []int{1, 2} {
		for _, sync := range []bool{true, false} {
			wrap := func(f cow.File) cow.File { return f }
			if !sync {
				wrap = noSync
			}
			b.Run(fmt.Sprintf("threads=%d/fsync=%v", threads, sync), func(b *testing.B) {
				b.SetBytes(int64(len(nw)))
				for b.Loop() {
					if _, err := Write(b.Context(), tp.p, Options{OutDir: b.TempDir(), OldDir: tp.oldDir(), Threads: threads, SkipVerify: true, WrapFile: wrap}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
