package loop

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// The host kernel of the development machine has loop built in; skip where it is missing
// or we are not root.
func needLoop(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat(ControlPath); err != nil {
		t.Skipf("no %s: %v", ControlPath, err)
	}
}

func TestAttachDetach(t *testing.T) {
	needLoop(t)
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"plain", Options{}},
		{"direct-io", Options{DirectIO: true}},
		{"read-only", Options{ReadOnly: true}},
		{"offset", Options{Offset: 4096, SizeLimit: 8192}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "disk.img")
			data := bytes.Repeat([]byte("0123456789abcdef"), 1<<12) // 64 KiB
			if err := os.WriteFile(img, data, 0o644); err != nil {
				t.Fatal(err)
			}
			dev, err := Attach(img, &tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := Detach(dev.Path); err != nil {
					t.Error(err)
				}
			}()
			st, err := GetStatus(dev.Path)
			if err != nil {
				t.Fatal(err)
			}
			if st.BackingFile != img || st.ReadOnly != tc.opts.ReadOnly || st.Offset != tc.opts.Offset {
				t.Errorf("status %+v", st)
			}
			f, err := os.Open(dev.Path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 4096)
			if _, err := f.ReadAt(buf, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf, data[tc.opts.Offset:tc.opts.Offset+4096]) {
				t.Error("data mismatch")
			}
			if tc.opts.ReadOnly {
				// Newer kernels allow the open but fail the write.
				w, err := os.OpenFile(dev.Path, os.O_WRONLY, 0)
				if err == nil {
					_, err = w.WriteAt(buf, 0)
					w.Close()
				}
				if err == nil {
					t.Error("write to a read-only loop device succeeded")
				}
			}
		})
	}
}

func TestErrors(t *testing.T) {
	needLoop(t)
	if _, err := Attach(filepath.Join(t.TempDir(), "missing"), nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	// Find an unattached device: status fails with ENXIO and Detach with ENXIO.
	dev, err := Attach(writeTemp(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := Detach(dev.Path); err != nil {
		t.Fatal(err)
	}
	var pe *os.PathError
	if _, err := GetStatus(dev.Path); !errors.As(err, &pe) || !errors.Is(err, unix.ENXIO) {
		t.Errorf("status of detached: %v", err)
	}
}

func writeTemp(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "x.img")
	if err := os.WriteFile(p, make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
