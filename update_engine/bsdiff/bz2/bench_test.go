package bz2

import (
	"math/rand/v2"
	"testing"
)

func BenchmarkCompress(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 1<<20)
	words := []string{"system ", "vendor ", "lib", "so\n", "0x1f ", "apk "}
	for i := 0; i < len(data); {
		i += copy(data[i:], words[r.IntN(len(words))])
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		Compress(data, 9)
	}
}
