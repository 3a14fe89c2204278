package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/kernel/dm"
)

func init() {
	register(scenario{name: "dmuser-teardown", run: dmuserTeardown, limit: 120 * time.Second})
}

const timeoutParam = "/sys/module/dm_user/parameters/dm_user_daemon_timeout_msec"

// readers runs n goroutines doing O_DIRECT 4 KiB reads over the device until stopped or
// until each has seen an error; it checks data against want while reads succeed.
type readers struct {
	stop     atomic.Bool
	wg       sync.WaitGroup
	ok       atomic.Int64
	mu       sync.Mutex
	errs     []error // first error of each reader
	mismatch atomic.Int64
}

func startReaders(path string, n int, want []byte, stopOnError bool) *readers {
	r := &readers{}
	for i := 0; i < n; i++ {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
			if err != nil {
				r.addErr(err)
				return
			}
			defer f.Close()
			buf := alignedBuf(4096)
			blocks := len(want) / 4096
			for j := i; !r.stop.Load(); j += 7 {
				off := int64(j%blocks) * 4096
				if _, err := f.ReadAt(buf, off); err != nil {
					r.addErr(err)
					if stopOnError {
						return
					}
					time.Sleep(5 * time.Millisecond)
					continue
				}
				if !bytes.Equal(buf, want[off:off+4096]) {
					r.mismatch.Add(1)
				}
				r.ok.Add(1)
			}
		}()
	}
	return r
}

func (r *readers) addErr(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

func (r *readers) errors() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.errs...)
}

// finish stops the readers and waits at most d for them.
func (r *readers) finish(d time.Duration) error {
	r.stop.Store(true)
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(d):
		return fmt.Errorf("readers still blocked %s after stop", d)
	}
}

// dmuserTeardown: the daemon dies or the table goes away while I/O is in flight. Readers
// must see I/O errors (or nothing, when a restarted daemon takes over), never hang; the
// daemon must see ENOTBLK; the kernel must not oops (the host checks the console).
func dmuserTeardown(ctx context.Context, e *env) error {
	c, err := dm.Open()
	if err != nil {
		return err
	}
	defer c.Close()
	old, err := os.ReadFile(timeoutParam)
	if err != nil {
		return fmt.Errorf("module parameter: %w", err)
	}
	if err := os.WriteFile(timeoutParam, []byte("1000"), 0); err != nil {
		return err
	}
	defer os.WriteFile(timeoutParam, bytes.TrimSpace(old), 0)

	steps := []struct {
		name string
		fn   func(context.Context, *env, *dm.Control) error
	}{
		{"daemon-restart-requeues", tdRestart},
		{"daemon-killed-eio", tdKilled},
		{"table-swap-enotblk", tdTableSwap},
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

func tdSetup(ctx context.Context, e *env, c *dm.Control, name string, delay time.Duration) (string, []byte, *daemonProc, error) {
	const size = 8 << 20
	store := "/tmp/" + name + ".store"
	want, err := makeStore(store, size, 2)
	if err != nil {
		return "", nil, nil, err
	}
	path, err := c.CreateDevice(name, []dm.Target{dm.User(0, size/512, name)}, nil)
	if err != nil {
		return "", nil, nil, err
	}
	d, err := startDaemon(e, "/dev/dm-user/"+name, store, 2, delay)
	if err != nil {
		return "", nil, nil, err
	}
	if err := waitChannels(ctx, c, name, 2); err != nil {
		d.kill()
		return "", nil, nil, err
	}
	return path, want, d, nil
}

// SIGKILL the daemon with reads in flight and restart it at once (within the daemon
// timeout): the kernel re-queues the unanswered messages to the new daemon, so readers see
// neither errors nor wrong data.
func tdRestart(ctx context.Context, e *env, c *dm.Control) error {
	const name = "t-td1"
	defer cleanup(c, name)
	defer os.Remove("/tmp/" + name + ".store")
	path, want, d, err := tdSetup(ctx, e, c, name, 20*time.Millisecond)
	if err != nil {
		return err
	}
	r := startReaders(path, 4, want, false)
	time.Sleep(300 * time.Millisecond)
	s, _ := userStatus(c, name)
	d.kill()
	e.logf("killed daemon with %d messages outstanding", s.Outstanding)
	d2, err := startDaemon(e, "/dev/dm-user/"+name, "/tmp/"+name+".store", 2, 0)
	if err != nil {
		return err
	}
	defer d2.kill()
	time.Sleep(300 * time.Millisecond)
	if err := r.finish(10 * time.Second); err != nil {
		return err
	}
	if errs := r.errors(); len(errs) > 0 {
		return fmt.Errorf("readers saw errors across a daemon restart: %v", errs[0])
	}
	if r.mismatch.Load() > 0 || r.ok.Load() == 0 {
		return fmt.Errorf("reads ok=%d mismatched=%d", r.ok.Load(), r.mismatch.Load())
	}
	if s.Outstanding == 0 {
		return errors.New("no I/O was in flight when the daemon was killed; the test proves nothing")
	}
	return nil
}

// SIGKILL the daemon with reads in flight and do not restart it: after the daemon timeout
// every reader gets EIO; new I/O fails at once; a new daemon brings the device back.
func tdKilled(ctx context.Context, e *env, c *dm.Control) error {
	const name = "t-td2"
	defer cleanup(c, name)
	defer os.Remove("/tmp/" + name + ".store")
	path, want, d, err := tdSetup(ctx, e, c, name, 20*time.Millisecond)
	if err != nil {
		return err
	}
	r := startReaders(path, 4, want, true)
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	d.kill()
	// All readers must stop with an error: the daemon timeout is 1 s.
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		r.stop.Store(true)
		return errors.New("readers still blocked 15 s after the daemon died")
	}
	e.logf("readers failed %.2fs after the daemon died", time.Since(t0).Seconds())
	errs := r.errors()
	if len(errs) != 4 {
		return fmt.Errorf("%d of 4 readers saw an error", len(errs))
	}
	for _, err := range errs {
		if !errors.Is(err, unix.EIO) {
			return fmt.Errorf("reader error %v, want EIO", err)
		}
	}
	s, err := userStatus(c, name)
	if err != nil || !s.DaemonLost || s.Outstanding != 0 || s.Channels != 0 {
		return fmt.Errorf("status after daemon loss %+v, %v", s, err)
	}
	t1 := time.Now()
	if _, err := directRead(path, 0, 4096); !errors.Is(err, unix.EIO) {
		return fmt.Errorf("read with no daemon: %v, want EIO", err)
	}
	if time.Since(t1) > 500*time.Millisecond {
		return fmt.Errorf("read with a lost daemon took %s, want an immediate error", time.Since(t1))
	}
	d2, err := startDaemon(e, "/dev/dm-user/"+name, "/tmp/"+name+".store", 1, 0)
	if err != nil {
		return err
	}
	defer d2.kill()
	if err := waitChannels(ctx, c, name, 1); err != nil {
		return err
	}
	got, err := directRead(path, 4096, 4096)
	if err != nil || !bytes.Equal(got, want[4096:8192]) {
		return fmt.Errorf("read after the daemon came back: %v", err)
	}
	return nil
}

// Replace the user table by an error table (what "dmsetup remove --force" does) while
// readers keep the device open and busy: the old table's destruction makes every daemon
// channel fail with ENOTBLK, readers then get EIO from the error target, a plain remove of
// the open device is refused with EBUSY, and a deferred remove completes once they close.
func tdTableSwap(ctx context.Context, e *env, c *dm.Control) error {
	const name = "t-td3"
	defer cleanup(c, name)
	defer os.Remove("/tmp/" + name + ".store")
	path, want, d, err := tdSetup(ctx, e, c, name, 5*time.Millisecond)
	if err != nil {
		return err
	}
	defer d.kill()
	r := startReaders(path, 4, want, false)
	time.Sleep(300 * time.Millisecond)
	if r.ok.Load() == 0 {
		return errors.New("no successful reads before the table swap")
	}
	size := uint64(len(want) / 512)
	if err := c.Load(name, []dm.Target{dm.Error(0, size)}, nil); err != nil {
		return err
	}
	if err := c.Suspend(name, false); err != nil {
		return err
	}
	if _, err := c.Resume(name); err != nil {
		return err
	}
	code, err := d.wait(10 * time.Second)
	if err != nil {
		return err
	}
	if code != exitENOTBLK || !strings.Contains(d.output(), "enotblk=true") {
		return fmt.Errorf("daemon exit %d, output %q; want ENOTBLK on every channel", code, d.output())
	}
	if _, err := os.Stat("/dev/dm-user/" + name); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("control node survived the table swap: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := c.Remove(name, false); !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("remove of an open device: %v, want EBUSY", err)
	}
	if err := c.Remove(name, true); err != nil {
		return fmt.Errorf("deferred remove: %w", err)
	}
	if err := r.finish(10 * time.Second); err != nil {
		return err
	}
	errs := r.errors()
	if len(errs) == 0 {
		return errors.New("readers saw no error after the table became an error target")
	}
	for _, err := range errs {
		if !errors.Is(err, unix.EIO) {
			return fmt.Errorf("reader error %v, want EIO", err)
		}
	}
	if r.mismatch.Load() > 0 {
		return fmt.Errorf("%d reads returned wrong data", r.mismatch.Load())
	}
	return waitFor(ctx, "deferred removal", 20*time.Millisecond, func() (bool, error) {
		_, err := c.Info(name)
		if errors.Is(err, unix.ENXIO) {
			return true, nil
		}
		return false, nil
	})
}
