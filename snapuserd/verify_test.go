package snapuserd_test

import (
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/proto"
)

// gatedDevice counts reads and holds them while gate is closed.
type gatedDevice struct {
	*snapuserd.Snapshot
	reads atomic.Int64
	gate  chan struct{}
}

func (d *gatedDevice) ReadSectors(p []byte, sector uint64) error {
	d.reads.Add(1)
	<-d.gate
	return d.Snapshot.ReadSectors(p, sector)
}

// TestUpdateVerifyBackground: with VerifyOnStart the verification starts
// when the handler starts (not with -init names), update-verify waits for
// it at most VerifyTimeout while other commands keep working, and reports
// success once it finished.
func TestUpdateVerifyBackground(t *testing.T) {
	pair := sameSizePairs(61, 300)["shifted"]
	dir := t.TempDir()
	p := newVABPart(t, dir, "system", pair, 3, false)
	devs := map[string]*gatedDevice{}
	fe := &snapuserd.EmulatedDmUser{Workers: 1}
	m := snapuserd.NewManager(snapuserd.Config{
		Frontend: fe, VerifyOnStart: true, VerifyTimeout: 300 * time.Millisecond,
		Open: func(req proto.InitRequest) (snapuserd.Device, error) {
			s, err := snapuserd.OpenSnapshot(req, nil)
			if err != nil {
				return nil, err
			}
			d := &gatedDevice{Snapshot: s, gate: make(chan struct{})}
			devs[req.Misc] = d
			return d, nil
		},
	})
	defer m.Shutdown()
	for _, misc := range []string{"system", "vendor-init"} {
		if _, err := m.InitHandler(proto.InitRequest{Misc: misc, Cow: p.cow, Backing: p.base, BasePath: p.base}); err != nil {
			t.Fatal(err)
		}
		if err := m.StartHandler(misc); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the verification to start at handler start", func() bool { return devs["system"].reads.Load() > 0 })
	time.Sleep(20 * time.Millisecond)
	if n := devs["vendor-init"].reads.Load(); n != 0 {
		t.Fatalf("-init handler verified at start (%d reads)", n)
	}
	// The reads are held: update-verify gives up after the bound and
	// the control path stays usable meanwhile.
	t0 := time.Now()
	done := make(chan bool, 1)
	go func() { done <- m.UpdateVerify() }()
	if st := m.MergeStatus("system"); st != proto.StatusSnapshot {
		t.Errorf("getstatus during update-verify: %q", st)
	}
	if ok := <-done; ok {
		t.Fatal("update-verify succeeded while reads were still held")
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("update-verify took %v with a 300ms bound", d)
	}
	close(devs["system"].gate)
	close(devs["vendor-init"].gate) // started by the first update-verify
	waitFor(t, "verification", m.UpdateVerify)
}

// TestUpdateVerifyDevice: with VerifyDevice the device node is read with
// O_DIRECT; a device that cannot be read fails update-verify.
func TestUpdateVerifyDevice(t *testing.T) {
	pair := sameSizePairs(62, 64)["random"]
	dir := t.TempDir()
	p := newVABPart(t, dir, "system", pair, 3, false)
	img := filepath.Join(dir, "verity.img")
	if err := os.WriteFile(img, pair.Target, 0o600); err != nil {
		t.Fatal(err)
	}
	if f, err := os.OpenFile(img, os.O_RDONLY|syscall.O_DIRECT, 0); err != nil {
		if errors.Is(err, syscall.EINVAL) {
			t.Skip("no O_DIRECT on", dir)
		}
		t.Fatal(err)
	} else {
		f.Close()
	}
	for _, tc := range []struct {
		path string
		ok   bool
	}{{img, true}, {filepath.Join(dir, "missing"), false}} {
		m := snapuserd.NewManager(snapuserd.Config{
			Frontend: &snapuserd.EmulatedDmUser{Workers: 1}, VerifyDevice: func(string) string { return tc.path },
			Open: func(req proto.InitRequest) (snapuserd.Device, error) { return snapuserd.OpenSnapshot(req, nil) },
		})
		if _, err := m.InitHandler(proto.InitRequest{Misc: "system", Cow: p.cow, Backing: p.base, BasePath: p.base}); err != nil {
			t.Fatal(err)
		}
		if got := m.UpdateVerify(); got != tc.ok {
			t.Errorf("update-verify reading %s: %v, want %v", tc.path, got, tc.ok)
		}
		m.Shutdown()
	}
}
