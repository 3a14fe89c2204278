package apply

import (
	"context"
	"os"
	"strconv"
	"testing"

	"github.com/vabc-go/vabc/update_engine/payload"
)

// BenchmarkExtractPayload extracts the payload named by VABC_EXTRACT_BENCH
// (make bench caches one in ~/.cache/vabc-bench/bench-payload.bin) with
// VABC_EXTRACT_THREADS workers (default 2), for profiling:
//
//	VABC_EXTRACT_BENCH=~/.cache/vabc-bench/bench-payload.bin go test -run X -bench ExtractPayload -cpuprofile cpu.out ./update_engine/apply
func BenchmarkExtractPayload(b *testing.B) {
	path := os.Getenv("VABC_EXTRACT_BENCH")
	if path == "" {
		b.Skip("VABC_EXTRACT_BENCH names no payload")
	}
	threads := 2
	if s := os.Getenv("VABC_EXTRACT_THREADS"); s != "" {
		threads, _ = strconv.Atoi(s)
	}
	p, err := payload.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	var size int64
	for _, pu := range p.Manifest.Partitions {
		size += int64(pu.GetNewPartitionInfo().GetSize())
	}
	b.SetBytes(size)
	out := b.TempDir()
	for b.Loop() {
		res, err := Extract(context.Background(), p, Options{OutDir: out, Threads: threads})
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res {
			if !r.Verified {
				b.Fatalf("%s not verified", r.Name)
			}
		}
	}
}
