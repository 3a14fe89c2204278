package fuse

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// countDev is a ramDev that records the size of every request.
type countDev struct {
	ramDev
	mu   sync.Mutex
	reqs []int
}

func (d *countDev) ReadSectors(p []byte, sector uint64) error {
	d.mu.Lock()
	d.reqs = append(d.reqs, len(p))
	d.mu.Unlock()
	return d.ramDev.ReadSectors(p, sector)
}

// take returns the requests so far (count, bytes, largest) and resets them.
func (d *countDev) take() (n, bytes, largest int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range d.reqs {
		bytes += r
		largest = max(largest, r)
	}
	n = len(d.reqs)
	d.reqs = nil
	return
}

// TestPageCacheAndReadAhead checks what the kernel sends the daemon: with
// the 1 MiB read-ahead (root), sequential 4 KiB reads arrive as requests
// larger than the kernel's default 128 KiB; a second pass and a new open are
// served from the page cache (KEEP_CACHE: no request at all); dropping the
// cache brings the requests back; and a file removed and added again under
// the same name shows the new device, not the old pages.
func TestPageCacheAndReadAhead(t *testing.T) {
	e := mountOrSkip(t)
	const size = 8 << 20
	r := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	dev := &countDev{ramDev: ramDev{data}}
	if err := e.Add("system", dev, size); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(e.Dir(), "system")
	pass := func() {
		t.Helper()
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		p := make([]byte, 4096)
		for off := int64(0); off < size; off += 4096 {
			if _, err := f.ReadAt(p, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p, data[off:off+4096]) {
				t.Fatalf("offset %d: data differs", off)
			}
		}
	}
	pass()
	n, b, largest := dev.take()
	ra := e.ReadAheadKB()
	t.Logf("cold pass: %d requests, %d bytes, largest %d; read_ahead_kb %d", n, b, largest, ra)
	if n == 0 || b < size {
		t.Fatalf("cold pass: %d requests of %d bytes, want the whole %d", n, b, size)
	}
	if os.Geteuid() == 0 && ra != 1024 {
		t.Errorf("read_ahead_kb = %d as root, want 1024", ra)
	}
	if ra >= 1024 && largest <= 128<<10 {
		t.Errorf("read-ahead %d KiB but largest request %d bytes", ra, largest)
	}
	pass()
	if n, b, _ := dev.take(); n != 0 {
		t.Errorf("warm pass (new open): %d requests (%d bytes), want none from the page cache", n, b)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	f.Close()
	pass()
	if n, b, _ := dev.take(); b < size {
		t.Errorf("after dropping the cache: %d requests of %d bytes, want the whole file again", n, b)
	}

	// Re-export under the same name with other contents: no stale pages.
	if err := e.Remove("system"); err != nil {
		t.Fatal(err)
	}
	for i := range data {
		data[i] = ^data[i]
	}
	if err := e.Add("system", &ramDev{data}, size); err != nil {
		t.Fatal(err)
	}
	pass()
}

// slowDev is a ramDev whose reads take a while and that records how many
// run at once.
type slowDev struct {
	ramDev
	mu        sync.Mutex
	cur, peak int
}

func (d *slowDev) ReadSectors(p []byte, sector uint64) error {
	d.mu.Lock()
	d.cur++
	d.peak = max(d.peak, d.cur)
	d.mu.Unlock()
	time.Sleep(5 * time.Millisecond)
	d.mu.Lock()
	d.cur--
	d.mu.Unlock()
	return d.ramDev.ReadSectors(p, sector)
}

// TestConcurrentRequests: readers of one exported file get their requests
// served at the same time (go-fuse serves each request on its own
// goroutine; the kernel keeps up to max_background read-ahead requests in
// flight), not one after the other.
func TestConcurrentRequests(t *testing.T) {
	e := mountOrSkip(t)
	const size = 4 << 20
	dev := &slowDev{ramDev: ramDev{make([]byte, size)}}
	if err := e.Add("system", dev, size); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(e.Dir(), "system"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			p := make([]byte, 4096)
			for k := range 8 {
				// Far apart, so that read-ahead does not merge them.
				if _, err := f.ReadAt(p, int64(g*size/4+k*(size/32))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if dev.peak < 2 {
		t.Errorf("at most %d request in flight with 4 readers, want several", dev.peak)
	}
	t.Logf("peak %d requests in flight", dev.peak)
}
