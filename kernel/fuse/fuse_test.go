package fuse

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vabc-go/vabc/kernel/dmuser"
)

// ramDev is a read-only sector device over a byte slice.
type ramDev struct{ b []byte }

func (d *ramDev) ReadSectors(p []byte, sector uint64) error {
	off := int64(sector) * 512
	if off+int64(len(p)) > int64(len(d.b)) {
		return fmt.Errorf("beyond end")
	}
	copy(p, d.b[off:])
	return nil
}
func (d *ramDev) WriteSectors(p []byte, sector uint64) error { return dmuser.ErrReadOnly }
func (d *ramDev) Flush() error                               { return nil }
func (d *ramDev) Discard(sector, length uint64) error        { return dmuser.ErrUnsupported }

func mountOrSkip(t *testing.T) *Export {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("FUSE test skipped: /dev/fuse unavailable (%v)", err)
	}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			t.Skip("FUSE test skipped: not root and fusermount3 missing (apt-get install -y fuse3)")
		}
	}
	dir := t.TempDir()
	e, err := Mount(dir, nil)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() { e.Unmount() })
	return e
}

func TestExportReadAddRemove(t *testing.T) {
	e := mountOrSkip(t)
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 3<<20+512) // not a multiple of 4 KiB
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	if err := e.Add("system", &ramDev{data}, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if err := e.Add("system", &ramDev{data}, int64(len(data))); err == nil {
		t.Error("duplicate Add succeeded")
	}
	if err := e.Add("a/b", &ramDev{data}, 512); err == nil {
		t.Error("name with slash accepted")
	}
	p := filepath.Join(e.Dir(), "system")
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("file contents differ")
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Size() != int64(len(data)) || fi.Mode().Perm() != 0o444 {
		t.Fatalf("stat: %v %v", fi, err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	for range 200 {
		off := r.Int64N(int64(len(data)))
		n := r.IntN(70000) + 1
		buf := make([]byte, n)
		m, err := f.ReadAt(buf, off)
		want := data[off:min(off+int64(n), int64(len(data)))]
		if m != len(want) || !bytes.Equal(buf[:m], want) || (err != nil && m == n) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v", off, n, m, err)
		}
	}
	f.Close()
	if _, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
		t.Error("opening for write succeeded")
	}
	if err := e.Remove("system"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		_, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("file still visible after Remove: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := e.Remove("system"); err == nil {
		t.Error("second Remove succeeded")
	}
}
