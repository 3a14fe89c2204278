package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vabc-go/vabc/kernel/dm"
	"github.com/vabc-go/vabc/kernel/loop"
)

func init() {
	register(scenario{name: "dmuser-passthrough", run: dmuserPassthrough, limit: 120 * time.Second})
}

// daemonProc is a passthrough-daemon child process.
type daemonProc struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	out     strings.Builder
	outDone chan struct{} // closed when the output pipe reached EOF
	done    chan struct{}
	err     error
}

func startDaemon(e *env, ctl, store string, channels int, delay time.Duration) (*daemonProc, error) {
	return startDaemonImpl(e, "dmuser", ctl, store, channels, delay)
}

func startDaemonImpl(e *env, impl, ctl, store string, channels int, delay time.Duration) (*daemonProc, error) {
	return startProcess(e, "daemon", "/proc/self/exe", "passthrough-daemon", "-impl", impl, "-ctl", ctl, "-store", store,
		"-channels", fmt.Sprint(channels), "-delay", delay.String())
}

// startProcess starts a child process whose output is collected and echoed to the console
// as "<label>[pid]: line".
func startProcess(e *env, label, path string, args ...string) (*daemonProc, error) {
	d := &daemonProc{done: make(chan struct{}), outDone: make(chan struct{})}
	d.cmd = exec.Command(path, args...)
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	d.cmd.Stdout, d.cmd.Stderr = pw, pw
	if err := d.cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, err
	}
	pw.Close()
	go func() {
		s := bufio.NewScanner(pr)
		for s.Scan() {
			d.mu.Lock()
			d.out.WriteString(s.Text() + "\n")
			d.mu.Unlock()
			e.logf("%s[%d]: %s", label, d.cmd.Process.Pid, s.Text())
		}
		pr.Close()
		close(d.outDone)
	}()
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

func (d *daemonProc) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.String()
}

func (d *daemonProc) kill() {
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
}

// wait waits for the daemon to exit and returns its exit code.
func (d *daemonProc) wait(timeout time.Duration) (int, error) {
	select {
	case <-d.done:
	case <-time.After(timeout):
		d.kill()
		return -1, fmt.Errorf("daemon did not exit within %s", timeout)
	}
	// The process is gone; collect the rest of its output (exec does not wait for our pipe).
	select {
	case <-d.outDone:
	case <-time.After(2 * time.Second):
	}
	if d.err == nil {
		return 0, nil
	}
	var ee *exec.ExitError
	if errors.As(d.err, &ee) {
		return ee.ExitCode(), nil
	}
	return -1, d.err
}

// userStatus reads the dm-user target's status line.
func userStatus(c *dm.Control, name string) (dm.UserStatus, error) {
	st, err := c.Status(name)
	if err != nil {
		return dm.UserStatus{}, err
	}
	if len(st) != 1 || st[0].Type != "user" {
		return dm.UserStatus{}, fmt.Errorf("status of %s = %v", name, st)
	}
	return dm.ParseUserStatus(st[0].Params)
}

func waitChannels(ctx context.Context, c *dm.Control, name string, n uint32) error {
	return waitFor(ctx, fmt.Sprintf("%d daemon channels on %s", n, name), 10*time.Millisecond, func() (bool, error) {
		s, err := userStatus(c, name)
		return err == nil && s.Channels == n, err
	})
}

// makeStore writes a file of size bytes with deterministic pseudo-random content.
func makeStore(path string, size int, seed uint64) ([]byte, error) {
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i+8 <= len(data); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	return data, os.WriteFile(path, data, 0o600)
}

// dmuserPassthrough: a daemon process serves a file through the module (read, write, flush,
// 16 parallel dd iflag=direct readers), then the protocol edge cases and the
// outstanding-message limit are driven by hand (dmuser_protocol.go).
func dmuserPassthrough(ctx context.Context, e *env) error {
	c, err := dm.Open()
	if err != nil {
		return err
	}
	defer c.Close()
	steps := []struct {
		name string
		fn   func(context.Context, *env, *dm.Control) error
	}{
		{"daemon-io", func(ctx context.Context, e *env, c *dm.Control) error {
			return ptDaemonIO(ctx, e, c, "dmuser", 32<<20)
		}},
		{"daemon-io-raw", func(ctx context.Context, e *env, c *dm.Control) error {
			return ptDaemonIO(ctx, e, c, "raw", 8<<20)
		}},
		{"snapshot-over-dmuser", snapshotOverDmuser},
		{"protocol-edges", protocolEdges},
		{"outstanding-limit", outstandingLimit},
	}
	for _, s := range steps {
		t0 := time.Now()
		if err := s.fn(ctx, e, c); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		e.logf("%s ok (%.2fs)", s.name, time.Since(t0).Seconds())
	}
	return nil
}

// ptDaemonIO serves a size-byte store with the daemon implementation impl (dmuser or raw).
func ptDaemonIO(ctx context.Context, e *env, c *dm.Control, impl string, size int) error {
	name := "t-pt-" + impl
	defer cleanup(c, name)

	store := "/tmp/" + name + ".store"
	want, err := makeStore(store, size, 1)
	if err != nil {
		return err
	}
	defer os.Remove(store)

	path, err := c.CreateDevice(name, []dm.Target{dm.User(0, uint64(size/512), name)}, nil)
	if err != nil {
		return err
	}
	ctl := "/dev/dm-user/" + name
	if _, err := os.Stat(ctl); err != nil {
		return fmt.Errorf("control node: %w", err)
	}
	table, err := c.Table(name)
	if err != nil || len(table) != 1 || table[0].Params != fmt.Sprintf("0 %d %s", size/512, name) {
		return fmt.Errorf("table = %v, %v", table, err)
	}
	d, err := startDaemonImpl(e, impl, ctl, store, 4, 0)
	if err != nil {
		return err
	}
	defer d.kill()
	if err := waitChannels(ctx, c, name, 4); err != nil {
		return err
	}

	// 1. Whole-device O_DIRECT read, 1 MiB at a time.
	t0 := time.Now()
	for off := 0; off < size; off += 1 << 20 {
		got, err := directRead(path, int64(off), 1<<20)
		if err != nil {
			return fmt.Errorf("read @%d: %w", off, err)
		}
		if !bytes.Equal(got, want[off:off+1<<20]) {
			return fmt.Errorf("read @%d: data differs from the store", off)
		}
	}
	e.logf("sequential O_DIRECT read of %d MiB: %.1f MiB/s", size>>20, float64(size>>20)/time.Since(t0).Seconds())

	// 2. Writes reach the store; fsync of the device sends a flush.
	blk := make([]byte, 256<<10)
	for i := range blk {
		blk[i] = byte(i*7 + 3)
	}
	const woff = 3<<20 + 4096
	if err := directWrite(path, woff, blk); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	copy(want[woff:], blk)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	f.Close()
	onDisk, err := os.ReadFile(store)
	if err != nil {
		return err
	}
	if !bytes.Equal(onDisk[woff:woff+len(blk)], blk) {
		return errors.New("written data not in the store")
	}
	got, err := directRead(path, woff-4096, len(blk)+8192)
	if err != nil || !bytes.Equal(got, want[woff-4096:woff+len(blk)+4096]) {
		return fmt.Errorf("read back around the write: %v", err)
	}

	// 3. Many parallel readers with busybox dd iflag=direct, each a different range.
	const readers = 16
	chunk := size / readers
	t0 = time.Now()
	var wg sync.WaitGroup
	errs := make([]error, readers)
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := fmt.Sprintf("/tmp/pt.read.%d", i)
			defer os.Remove(out)
			if _, err := busybox(ctx, "dd", "if="+path, "of="+out, "bs=64k",
				fmt.Sprintf("skip=%d", i*chunk/(64<<10)), fmt.Sprintf("count=%d", chunk/(64<<10)), "iflag=direct"); err != nil {
				errs[i] = err
				return
			}
			b, err := os.ReadFile(out)
			if err != nil {
				errs[i] = err
				return
			}
			if !bytes.Equal(b, want[i*chunk:(i+1)*chunk]) {
				errs[i] = fmt.Errorf("reader %d: data differs from the store", i)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	e.logf("%d parallel dd iflag=direct readers, %d MiB: %.1f MiB/s", readers, size>>20,
		float64(size>>20)/time.Since(t0).Seconds())

	if impl == "dmuser" {
		if err := compareWithLinear(ctx, e, c, path, store, size); err != nil {
			return err
		}
	}

	s, err := userStatus(c, name)
	if err != nil || s.Channels != 4 || s.Outstanding != 0 || s.DaemonLost {
		return fmt.Errorf("idle status %+v, %v; want 4 channels, 0 outstanding", s, err)
	}

	// 4. Removing the device ends the daemon: every channel reads ENOTBLK.
	if err := c.Remove(name, false); err != nil {
		return err
	}
	code, err := d.wait(10 * time.Second)
	if err != nil {
		return err
	}
	if code != exitENOTBLK {
		return fmt.Errorf("daemon exit code %d after remove, want %d (ENOTBLK on every channel)", code, exitENOTBLK)
	}
	out := d.output()
	if !strings.Contains(out, "enotblk=true") || strings.Contains(out, "flushes=0") ||
		strings.Contains(out, "writes=0 ") || strings.Contains(out, "reads=0 ") {
		return fmt.Errorf("daemon stats: %q", out)
	}
	if _, err := os.Stat(ctl); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s still present after remove: %v", ctl, err)
	}
	return nil
}

// ddRate times "dd if=path of=/dev/null bs=1M iflag=direct" over size bytes, in MiB/s.
func ddRate(ctx context.Context, path string, size int) (float64, error) {
	t0 := time.Now()
	if _, err := busybox(ctx, "dd", "if="+path, "of=/dev/null", "bs=1M", fmt.Sprintf("count=%d", size>>20), "iflag=direct"); err != nil {
		return 0, err
	}
	return float64(size>>20) / time.Since(t0).Seconds(), nil
}

// compareWithLinear reads the dm-user device and a dm-linear device over a loop device on
// the same store with dd iflag=direct in the same boot and prints the ratio as a metric
// line (the VM half of make bench; the snapuserd-served variant follows with snapuserd).
func compareWithLinear(ctx context.Context, e *env, c *dm.Control, userPath, store string, size int) error {
	ld, err := loop.Attach(store, nil)
	if err != nil {
		return err
	}
	defer loop.Detach(ld.Path)
	const lin = "t-pt-linear"
	linPath, err := c.CreateDevice(lin, []dm.Target{dm.Linear(0, uint64(size/512), ld.Path, 0)}, nil)
	if err != nil {
		return err
	}
	defer cleanup(c, lin)
	var userRate, linRate float64
	for i := 0; i < 2; i++ { // best of two, TCG timing is noisy
		u, err := ddRate(ctx, userPath, size)
		if err != nil {
			return err
		}
		l, err := ddRate(ctx, linPath, size)
		if err != nil {
			return err
		}
		userRate, linRate = max(userRate, u), max(linRate, l)
	}
	fmt.Printf("VMTEST-METRIC: dmuser_passthrough_read_mib_s=%.1f linear_loop_read_mib_s=%.1f ratio=%.3f\n",
		userRate, linRate, userRate/linRate)
	return nil
}

// snapshotOverDmuser stacks the kernel's snapshot target on a dm-user COW device served by
// the daemon (the Android 12 "Mode A" stack, snapuserd.md §1): the persistent exception
// store lands in the daemon's file, and snapshot-merge merges it back into the origin.
func snapshotOverDmuser(ctx context.Context, e *env, c *dm.Control) error {
	const cowName, snapName = "t-ucow", "t-usnap"
	const cowSize = 16 << 20
	defer cleanup(c, snapName, cowName)
	store := "/tmp/" + cowName + ".store"
	if err := os.WriteFile(store, make([]byte, cowSize), 0o600); err != nil {
		return err
	}
	defer os.Remove(store)
	cowPath, err := c.CreateDevice(cowName, []dm.Target{dm.User(0, cowSize/512, cowName)}, nil)
	if err != nil {
		return err
	}
	d, err := startDaemon(e, "/dev/dm-user/"+cowName, store, 2, 0)
	if err != nil {
		return err
	}
	defer d.kill()
	if err := waitChannels(ctx, c, cowName, 2); err != nil {
		return err
	}
	size, err := sectors(diskOrigin)
	if err != nil {
		return err
	}
	if err := directWrite(diskOrigin, 1<<20, pattern('A', 4096)); err != nil {
		return err
	}
	snapPath, err := c.CreateDevice(snapName, []dm.Target{dm.Snapshot(0, size, diskOrigin, cowPath, true, dm.DefaultChunkSectors)}, nil)
	if err != nil {
		return err
	}
	if err := directWrite(snapPath, 1<<20, pattern('S', 4096)); err != nil {
		return err
	}
	if err := expectBlock(snapPath, 1<<20, 'S'); err != nil {
		return err
	}
	if err := expectBlock(diskOrigin, 1<<20, 'A'); err != nil {
		return fmt.Errorf("origin changed before merge: %w", err)
	}
	hdr := make([]byte, 16)
	f, err := os.Open(store)
	if err != nil {
		return err
	}
	_, err = f.ReadAt(hdr, 0)
	f.Close()
	if err != nil {
		return err
	}
	if string(hdr[:4]) != "SnAp" {
		return fmt.Errorf("daemon store starts with %q, want the dm-snapshot magic \"SnAp\"", hdr[:4])
	}
	st, err := c.Status(snapName)
	if err != nil {
		return err
	}
	e.logf("snapshot over dm-user status %q", st[0].Params)
	if err := c.Reload(snapName, []dm.Target{dm.SnapshotMerge(0, size, diskOrigin, cowPath, true, dm.DefaultChunkSectors)}); err != nil {
		return err
	}
	if err := waitMerged(ctx, c, snapName); err != nil {
		return err
	}
	if err := c.Remove(snapName, false); err != nil {
		return err
	}
	if err := expectBlock(diskOrigin, 1<<20, 'S'); err != nil {
		return fmt.Errorf("after merge through dm-user: %w", err)
	}
	if err := c.Remove(cowName, false); err != nil {
		return err
	}
	if code, err := d.wait(10 * time.Second); err != nil || code != exitENOTBLK {
		return fmt.Errorf("daemon exit %d, %v", code, err)
	}
	return nil
}
