package snapuserd_test

import (
	"bytes"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/proto"
	"github.com/vabc-go/vabc/snapuserd/snapuserdtest"
)

// readsPerTriple is how many random reads each triple gets through the
// emulated dm-user transport: 100k (issue 4's bar) in every run,
// VABC_LONG=1 raises it to 500k as a soak, and VABC_READS=N sets it (for
// -race runs, say).
func readsPerTriple() int {
	if n, err := strconv.Atoi(os.Getenv("VABC_READS")); err == nil && n > 0 {
		return n
	}
	if os.Getenv("VABC_LONG") != "" {
		return 500_000
	}
	return 100_000
}

// smallCache reports whether a triple runs with a payload cache of
// smallCacheBytes (a third of the test image), so that cache misses,
// evictions and concurrent loads of one unit happen throughout the run;
// only for the cheap codecs at AOSP's default factor, whose units decode in
// microseconds.
func smallCache(spec snapuserdtest.TripleSpec) bool {
	c := spec.Comp.String()
	return spec.Version == 3 && spec.Factor == 64<<10 && (c == "lz4" || c == "none")
}

const smallCacheBytes = 1536 << 10

// TestRandomReadsThroughDmUser drives the Manager end to end: init/start
// through the proto.Daemon interface, then random (sector, len) reads,
// aligned and not, issued on the emulated kernel side and compared with the
// target image.
func TestRandomReadsThroughDmUser(t *testing.T) {
	for i, spec := range snapuserdtest.Specs(1024) {
		t.Run(spec.String(), func(t *testing.T) {
			t.Parallel()
			tr := snapuserdtest.GenTriple(t, spec)
			// Several read workers (channels) serve concurrently; two
			// triples hand out one message at a time per channel.
			fe := &snapuserd.EmulatedDmUser{Workers: 2 + i%3}
			if i%10 == 3 {
				fe.Options.Depth = 1
			}
			if i%2 == 1 {
				fe.Options.Split = rand.New(rand.NewPCG(uint64(i), 99))
				fe.Options.MaxRequest = 256 << 10
			}
			m := snapuserd.NewManager(snapuserd.Config{Frontend: fe, Open: func(req proto.InitRequest) (snapuserd.Device, error) {
				s := snapshotOf(t, tr)
				if smallCache(spec) {
					snapuserd.SetPayloadCacheLimit(s, smallCacheBytes)
				}
				return s, nil
			}})
			defer m.Shutdown()
			n, err := m.InitHandler(proto.InitRequest{Misc: "system", Cow: "c", Backing: "s", BasePath: "b"})
			if err != nil || n != uint64(len(tr.Target)/512) {
				t.Fatalf("init: %d %v", n, err)
			}
			if err := m.StartHandler("system"); err != nil {
				t.Fatal(err)
			}
			tgt := fe.Target("system")
			total := readsPerTriple()
			const goroutines = 16
			var wg sync.WaitGroup
			var mu sync.Mutex
			var failures int
			var unaligned, large, bytesRead atomic.Int64
			start := time.Now()
			for g := range goroutines {
				wg.Go(func() {
					r := rand.New(rand.NewPCG(uint64(i), uint64(g)))
					nsec := int64(len(tr.Target) / 512)
					buf := make([]byte, 2<<20)
					for range total / goroutines {
						sec := r.Int64N(nsec)
						var l int64
						switch k := r.IntN(1000); {
						case k < 850:
							l = 1 + r.Int64N(16) // ≤ 8 KiB, mostly unaligned
						case k < 995:
							l = 1 + r.Int64N(128) // ≤ 64 KiB
						default:
							l = 1 + r.Int64N(3072) // 0.5%: ≤ 1.5 MiB, split into several requests
						}
						if r.IntN(3) == 0 {
							sec &^= 7 // block aligned start
							l = (l + 7) &^ 7
						}
						l = min(l, nsec-sec)
						if sec%8 != 0 || l%8 != 0 {
							unaligned.Add(1)
						}
						if l*512 > 1<<20 {
							large.Add(1)
						}
						bytesRead.Add(l * 512)
						p := buf[:l*512]
						want := tr.Target[sec*512 : sec*512+l*512]
						for o := 0; o < len(p); o += 512 {
							// A sector the daemon does not deliver cannot pass as stale data.
							p[o], p[o+511] = ^want[o], ^want[o+511]
						}
						if _, err := tgt.ReadAt(p, sec*512); err != nil {
							mu.Lock()
							failures++
							mu.Unlock()
							t.Errorf("read sector %d len %d: %v", sec, l*512, err)
							return
						}
						if !bytes.Equal(p, want) {
							t.Errorf("read sector %d len %d: differs at byte %d", sec, l*512, firstDiff(p, tr.Target[sec*512:]))
							return
						}
					}
				})
			}
			wg.Wait()
			el := time.Since(start)
			t.Logf("%d reads (%d unaligned, %d over 1 MiB), %d MiB in %v: %.0f reads/s",
				total, unaligned.Load(), large.Load(), bytesRead.Load()>>20, el.Round(time.Millisecond), float64(total)/el.Seconds())
			if !t.Failed() && (unaligned.Load() < int64(total)/2 || large.Load() == 0) {
				t.Errorf("read mix: %d of %d unaligned, %d over 1 MiB", unaligned.Load(), total, large.Load())
			}
			if v := tgt.Violations(); len(v) > 0 {
				t.Errorf("protocol violations: %v", v)
			}
			// Writes are refused with an ERROR response, not a crash.
			if _, err := tgt.WriteAt(make([]byte, 4096), 0); err == nil {
				t.Error("write to a snapshot succeeded")
			}
			if err := m.DeleteHandler("system"); err != nil {
				t.Fatal(err)
			}
			if _, err := tgt.ReadAt(make([]byte, 512), 0); err == nil {
				t.Error("read after delete succeeded")
			}
		})
	}
}
