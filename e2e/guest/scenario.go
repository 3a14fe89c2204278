package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/kernel/dm"
)

// scenario is one VM test. Each lives in its own scenario_*.go file and registers itself
// in scenarios (order matters: later scenarios may rely on the module loaded earlier, never
// on state left by another scenario).
type scenario struct {
	name string
	run  func(ctx context.Context, e *env) error
	// afterReboot, when set, runs in a second boot of the VM with the same disks, only if
	// run passed (e2e/run.sh reboots when the first boot prints VMTEST-REBOOT lines).
	afterReboot func(ctx context.Context, e *env) error
	missing     string        // when run is nil: why the scenario is not present yet
	limit       time.Duration // 0 = 60 s
}

func (s scenario) timeout() time.Duration {
	if s.limit > 0 {
		return s.limit
	}
	return 60 * time.Second
}

var scenarios []scenario

func register(s scenario) { scenarios = append(scenarios, s) }

// env is handed to a scenario.
type env struct {
	name string
}

func (e *env) logf(format string, args ...any) {
	logf(e.name+": "+format, args...)
}

// Disks attached by e2e/run.sh.
const (
	diskOrigin = "/dev/vda" // 64 MiB, zero-filled at boot
	diskCOW    = "/dev/vdb" // 16 MiB, zero-filled at boot
)

// alignedBuf returns a page-aligned buffer usable for O_DIRECT.
func alignedBuf(n int) []byte {
	b, err := unix.Mmap(-1, 0, (n+4095)&^4095, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		panic(err) // out of memory in the guest: nothing sensible to do
	}
	return b[:n]
}

// pattern returns n bytes filled with a repeating letter.
func pattern(letter byte, n int) []byte {
	b := alignedBuf(n)
	for i := range b {
		b[i] = letter
	}
	return b
}

// directWrite writes data at off with O_DIRECT (vm-harness.md §12 trap 2: buffered reads of
// a disk under dm can be stale).
func directWrite(path string, off int64, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := alignedBuf(len(data))
	copy(buf, data)
	defer unix.Munmap(buf[:cap(buf)])
	if _, err := f.WriteAt(buf, off); err != nil {
		return err
	}
	return nil
}

// directRead reads n bytes at off with O_DIRECT.
func directRead(path string, off int64, n int) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := alignedBuf(n)
	if _, err := f.ReadAt(buf, off); err != nil {
		return nil, err
	}
	out := append([]byte(nil), buf...)
	unix.Munmap(buf[:cap(buf)])
	return out, nil
}

// expectBlock checks that the 4 KiB at off of path is the letter.
func expectBlock(path string, off int64, letter byte) error {
	got, err := directRead(path, off, 4096)
	if err != nil {
		return fmt.Errorf("read %s@%d: %w", path, off, err)
	}
	if !bytes.Equal(got, pattern(letter, 4096)) {
		return fmt.Errorf("%s@%d: got %q..., want %c", path, off, got[:8], letter)
	}
	return nil
}

func sectors(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	return uint64(n) / 512, nil
}

func devName(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "?"
	}
	return fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
}

// cleanup removes dm devices by name, ignoring "no such device".
func cleanup(c *dm.Control, names ...string) {
	for _, n := range names {
		if err := c.Remove(n, false); err != nil && !errors.Is(err, unix.ENXIO) {
			logf("cleanup: %v", err)
		}
	}
}

func waitFor(ctx context.Context, what string, every time.Duration, cond func() (bool, error)) error {
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-time.After(every):
		}
	}
}

// busybox runs a busybox applet and returns its combined output.
func busybox(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "/bin/busybox", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
