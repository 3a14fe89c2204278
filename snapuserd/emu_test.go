package snapuserd_test

import (
	"bytes"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/proto"
	"github.com/vabc-go/vabc/snapuserd/snapuserdtest"
)

// readsPerTriple is how many random reads each triple gets through the
// emulated dm-user transport. VABC_LONG=1 raises every triple to 100k.
func readsPerTriple(spec snapuserdtest.TripleSpec) int {
	if os.Getenv("VABC_LONG") != "" {
		return 100_000
	}
	// The headline triple (v3, lz4, 64 KiB units: AOSP's build default)
	// gets 20k reads, the others 2k each, to keep `go test` fast on a busy
	// 2-core machine.
	if spec.Version == 3 && spec.Factor == 64<<10 && spec.Comp.String() == "lz4" {
		return 20_000
	}
	return 2_000
}

// TestRandomReadsThroughDmUser drives the Manager end to end: init/start
// through the proto.Daemon interface, then random (sector, len) reads,
// aligned and not, issued on the emulated kernel side and compared with the
// target image.
func TestRandomReadsThroughDmUser(t *testing.T) {
	for i, spec := range snapuserdtest.Specs(1024) {
		t.Run(spec.String(), func(t *testing.T) {
			t.Parallel()
			tr := snapuserdtest.GenTriple(t, spec)
			fe := &snapuserd.EmulatedDmUser{Workers: 1 + i%4}
			if readsPerTriple(spec) >= 20_000 {
				fe.Workers = 4
			}
			if i%2 == 1 {
				fe.Options.Split = rand.New(rand.NewPCG(uint64(i), 99))
				fe.Options.MaxRequest = 256 << 10
			}
			m := snapuserd.NewManager(snapuserd.Config{Frontend: fe, Open: func(req proto.InitRequest) (snapuserd.Device, error) { return snapshotOf(t, tr), nil }})
			defer m.Shutdown()
			n, err := m.InitHandler(proto.InitRequest{Misc: "system", Cow: "c", Backing: "s", BasePath: "b"})
			if err != nil || n != uint64(len(tr.Target)/512) {
				t.Fatalf("init: %d %v", n, err)
			}
			if err := m.StartHandler("system"); err != nil {
				t.Fatal(err)
			}
			tgt := fe.Target("system")
			total := readsPerTriple(spec)
			const goroutines = 16
			var wg sync.WaitGroup
			var mu sync.Mutex
			var failures int
			for g := range goroutines {
				wg.Go(func() {
					r := rand.New(rand.NewPCG(uint64(i), uint64(g)))
					nsec := int64(len(tr.Target) / 512)
					buf := make([]byte, 2<<20)
					for range total / goroutines {
						sec := r.Int64N(nsec)
						var l int64
						switch k := r.IntN(100); {
						case k < 85:
							l = 1 + r.Int64N(16) // ≤ 8 KiB, mostly unaligned
						case k < 99:
							l = 1 + r.Int64N(128) // ≤ 64 KiB
						default:
							l = 1 + r.Int64N(3072) // ≤ 1.5 MiB, split into several requests
						}
						if r.IntN(3) == 0 {
							sec &^= 7 // block aligned start
							l = (l + 7) &^ 7
						}
						l = min(l, nsec-sec)
						p := buf[:l*512]
						if _, err := tgt.ReadAt(p, sec*512); err != nil {
							mu.Lock()
							failures++
							mu.Unlock()
							t.Errorf("read sector %d len %d: %v", sec, l*512, err)
							return
						}
						if !bytes.Equal(p, tr.Target[sec*512:sec*512+l*512]) {
							t.Errorf("read sector %d len %d: differs at byte %d", sec, l*512, firstDiff(p, tr.Target[sec*512:]))
							return
						}
					}
				})
			}
			wg.Wait()
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
