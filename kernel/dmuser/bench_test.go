package dmuser

import (
	"fmt"
	"testing"
)

// BenchmarkEmulatedRead measures the emulated transport alone: 4 KiB reads
// of a RAM handler (one copy) from one submitter and from several, over 1
// and 4 channels. What it costs per request is the round trip between the
// emulated kernel and the daemon's worker loops.
func BenchmarkEmulatedRead(b *testing.B) {
	const size = 16 << 20
	for _, sock := range []bool{false, true} {
		for _, ch := range []int{1, 4} {
			for _, par := range []int{1, 4} {
				b.Run(fmt.Sprintf("socketpair=%v/chans=%d/readers=%d", sock, ch, par), func(b *testing.B) {
					tgt, _ := startServer(b, newRAM(size), size, &EmulatorOptions{Channels: ch, Socketpair: sock})
					b.SetBytes(4096)
					b.SetParallelism(par)
					b.RunParallel(func(pb *testing.PB) {
						p := make([]byte, 4096)
						off := int64(0)
						for pb.Next() {
							if _, err := tgt.ReadAt(p, off); err != nil {
								b.Error(err)
								return
							}
							off = (off + 4096) % size
						}
					})
				})
			}
		}
	}
}
