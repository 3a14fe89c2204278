package lz4diff

import (
	"testing"

	"github.com/vabc-go/vabc/update_engine/bsdiff"
)

// BenchmarkApply: an LZ4DIFF_BSDIFF over ~1 MiB of LZ4HC-9 text clusters.
func BenchmarkApply(b *testing.B) {
	old, nw := text(1, 1<<20), edit(text(1, 1<<20), 3)
	sb, sbl := clusters(old, LZ4HC, 9, true)
	_, dbl := clusters(nw, LZ4HC, 9, true)
	inner, err := bsdiff.Diff(old, nw).Encode(bsdiff.Format{})
	if err != nil {
		b.Fatal(err)
	}
	h := &Header{Src: Info{Algo: LZ4HC, Level: 9, Blocks: sbl, ZeroPadding: true}, Dst: Info{Algo: LZ4HC, Level: 9, Blocks: dbl, ZeroPadding: true}}
	patch := h.Encode(inner)
	b.SetBytes(int64(len(nw)))
	b.ResetTimer()
	for range b.N {
		if _, err := Apply(sb, patch); err != nil {
			b.Fatal(err)
		}
	}
}
