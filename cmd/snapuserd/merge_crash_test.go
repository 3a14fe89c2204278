package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/cow/create"
	"github.com/vabc-go/vabc/kernel/dmuser"
	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/client"
	"github.com/vabc-go/vabc/snapuserd/merge"
	"github.com/vabc-go/vabc/snapuserd/proto"
)

var (
	crashIterations = flag.Int("crash.iterations", 50, "seeded daemon SIGKILL iterations of TestMergeSIGKILL")
	soak            = flag.Bool("soak", false, "TestMergeSIGKILL: 10× the iterations and more kills per iteration")
)

// Environment of the re-executed test binary acting as the daemon.
const (
	childArgsEnv = "VABC_SNAPUSERD_DAEMON_ARGS" // daemon arguments, \x1f separated
	childFdsEnv  = "VABC_SNAPUSERD_DMUSER_FDS"  // how many inherited dm-user channels (fds 3…)
)

// TestMain turns the test binary into the daemon when started by
// TestMergeSIGKILL: `snapuserd <args>` with the inherited dm-user channels as
// its frontend. Everything else is the real daemon (flags, control socket,
// Manager, merge engine).
func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv(childArgsEnv); ok {
		os.Exit(daemonChild(strings.Split(args, "\x1f")))
	}
	os.Exit(m.Run())
}

func daemonChild(args []string) int {
	n, _ := strconv.Atoi(os.Getenv(childFdsEnv))
	testFrontend = &fdFrontend{first: 3, n: n}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, args, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "snapuserd:", err)
		return 1
	}
	return 0
}

// fdFrontend is the dm-user frontend over channels inherited from the
// parent, which holds the kernel side (ktarget): like /dev/dm-user/<misc>,
// they outlive the daemon process.
type fdFrontend struct {
	first, n int
	used     bool
}

func (f *fdFrontend) Name() string { return "dm-user (inherited channels)" }

func (f *fdFrontend) Prepare(misc string, dev snapuserd.Device) (snapuserd.Export, error) {
	if f.used || f.n < 1 {
		return nil, fmt.Errorf("no inherited dm-user channels for %s", misc)
	}
	f.used = true
	var chans []dmuser.Channel
	for i := range f.n {
		fd := f.first + i
		// Inherited descriptors are blocking; the poller needs them
		// non-blocking so that closing them interrupts the workers.
		if err := unix.SetNonblock(fd, true); err != nil {
			return nil, err
		}
		chans = append(chans, os.NewFile(uintptr(fd), fmt.Sprintf("dm-user-%s-%d", misc, i)))
	}
	return &fdExport{srv: dmuser.NewServer(misc, dev, chans, nil), chans: chans}, nil
}

type fdExport struct {
	srv   *dmuser.Server
	chans []dmuser.Channel
}

func (e *fdExport) Serve(ctx context.Context) error { e.chans = nil; return e.srv.Run(ctx) }
func (e *fdExport) Close() error {
	for _, c := range e.chans {
		c.Close()
	}
	return nil
}

// ktarget is the kernel side of one dm-user target that survives daemon
// restarts, as the real module does: requests wait in a queue for a channel;
// when a channel breaks (the daemon died) the request it carried is queued
// again, whatever part of the response had arrived, and is served by the
// next daemon that opens the control node.
type ktarget struct {
	size  int64
	seq   atomic.Uint64
	queue chan *kmsg
	stop  chan struct{}
	wg    sync.WaitGroup
}

type kmsg struct {
	hdr  dmuser.Header
	buf  []byte
	done chan error
}

func newKTarget(size int64) *ktarget {
	return &ktarget{size: size, queue: make(chan *kmsg, 128), stop: make(chan struct{})}
}

// channel returns the daemon's end of a new channel (as an open() of the
// control node) and serves the kernel end until it breaks.
func (k *ktarget) channel() (*os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		return nil, err
	}
	kf := os.NewFile(uintptr(fds[0]), "dm-user-kernel")
	k.wg.Go(func() { k.loop(kf) })
	return os.NewFile(uintptr(fds[1]), "dm-user-daemon"), nil
}

func (k *ktarget) loop(f *os.File) {
	defer f.Close()
	stopClose := context.AfterFunc(ctxFromChan(k.stop), func() { f.Close() })
	defer stopClose()
	rb := make([]byte, dmuser.HeaderSize)
	for {
		var m *kmsg
		select {
		case m = <-k.queue:
		case <-k.stop:
			return
		}
		out, _ := m.hdr.AppendBinary(nil)
		if _, err := f.Write(out); err != nil {
			k.queue <- m
			return
		}
		if _, err := io.ReadFull(f, rb); err != nil {
			k.queue <- m
			return
		}
		var resp dmuser.Header
		_ = resp.UnmarshalBinary(rb)
		if resp.Seq != m.hdr.Seq {
			m.done <- fmt.Errorf("response seq %d to request %v", resp.Seq, m.hdr)
			return
		}
		if st := dmuser.Status(resp.Type); st != dmuser.StatusSuccess {
			m.done <- fmt.Errorf("daemon answered %v to %v", st, m.hdr)
			continue
		}
		if _, err := io.ReadFull(f, m.buf); err != nil {
			k.queue <- m // torn response: the next daemon serves it again
			return
		}
		m.done <- nil
	}
}

func ctxFromChan(c chan struct{}) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-c; cancel() }()
	return ctx
}

// readAt issues one read request (any sector and length) and waits for it,
// across daemon restarts, up to timeout.
func (k *ktarget) readAt(p []byte, off int64, timeout time.Duration) error {
	m := &kmsg{hdr: dmuser.Header{Seq: k.seq.Add(1), Type: uint64(dmuser.ReqRead), Sector: uint64(off / 512), Len: uint64(len(p))},
		buf: p, done: make(chan error, 1)}
	k.queue <- m
	select {
	case err := <-m.done:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("read of %d bytes at %d: no response in %v", len(p), off, timeout)
	}
}

func (k *ktarget) close() { close(k.stop); k.wg.Wait() }

// crashCase is one seed's images: v2/v3, codec, compression factor, scratch.
type crashCase struct {
	version   int
	comp      cow.Compression
	factor    uint32
	noScratch bool
}

func crashCaseOf(seed int) crashCase {
	c := crashCase{version: 2 + seed%2, noScratch: seed%7 == 6}
	if c.version == 2 {
		c.comp = []cow.Compression{cow.CompressionLz4, cow.CompressionNone, cow.CompressionGz}[seed/2%3]
	} else {
		c.comp = []cow.Compression{cow.CompressionLz4, cow.CompressionZstd, cow.CompressionNone}[seed/2%3]
		c.factor = []uint32{64 << 10, 16 << 10, 256 << 10}[seed/2%3]
	}
	return c
}

func (c crashCase) String() string {
	s := fmt.Sprintf("v%d-%v", c.version, c.comp)
	if c.factor > 0 {
		s += fmt.Sprintf("-%dK", c.factor>>10)
	}
	if c.noScratch {
		s += "-noscratch"
	}
	return s
}

// crashPair generates source (= base: Virtual A/B merges in place) and
// target images: long ascending and descending shift chains and a rotation
// cycle (overlapping Copy chains that the merge order must respect), small
// edits (Xor ops), long runs of new data (multi-block Replace ops in v3),
// zero runs, swaps and unchanged blocks.
func crashPair(seed uint64, blocks int) (src, tgt []byte) {
	const bs = 4096
	rng := rand.New(rand.NewPCG(seed, 0xda7a))
	words := []string{"system ", "vendor ", "lib", ".so ", "android ", "0x7f3a ", "snapshot ", "\x00\x00\x00\x00"}
	text := func(p []byte) {
		for i := 0; i < len(p); {
			i += copy(p[i:], words[rng.IntN(len(words))])
		}
	}
	src = make([]byte, blocks*bs)
	for b := range blocks {
		p := src[b*bs : (b+1)*bs]
		if b%2 == 0 {
			for i := 0; i < bs; i += 8 {
				v := rng.Uint64()
				for k := range 8 {
					p[i+k] = byte(v >> (8 * k))
				}
			}
		} else {
			text(p)
		}
		copy(p, fmt.Sprintf("blk%06d", b)) // every block distinct
	}
	tgt = bytes.Clone(src)
	blk := func(img []byte, b int) []byte { return img[b*bs : (b+1)*bs] }
	at := func(frac float64) int { return int(float64(blocks) * frac) }
	// Ascending shift chains: b ← b+k.
	for b := at(0); b < at(0.2); b++ {
		k := 1 + (b/64)%4
		copy(blk(tgt, b), blk(src, b+k))
	}
	// Rotation cycle: b ← b+1 over a range, the last ← the first.
	lo, hi := at(0.2), at(0.3)
	for b := lo; b < hi-1; b++ {
		copy(blk(tgt, b), blk(src, b+1))
	}
	copy(blk(tgt, hi-1), blk(src, lo))
	// Descending shift chains: b ← b-k.
	for b := at(0.45) - 1; b >= at(0.3)+4; b-- {
		copy(blk(tgt, b), blk(src, b-1-(b/50)%3))
	}
	// Small edits: Xor against the old block.
	for b := at(0.45); b < at(0.6); b++ {
		for range 6 {
			tgt[b*bs+rng.IntN(bs)] ^= byte(1 + rng.IntN(255))
		}
	}
	// New data: long Replace runs.
	text(tgt[at(0.6)*bs : at(0.8)*bs])
	// Zero runs.
	clear(tgt[at(0.8)*bs : at(0.85)*bs])
	// Swaps in the rest (2-cycles), some blocks unchanged.
	for range blocks / 20 {
		a, b := at(0.85)+rng.IntN(blocks-at(0.85)), at(0.85)+rng.IntN(blocks-at(0.85))
		copy(blk(tgt, a), blk(src, b))
		copy(blk(tgt, b), blk(src, a))
	}
	return src, tgt
}

func buildCrashCow(t *testing.T, c crashCase, src, tgt []byte, path string) map[string]uint64 {
	t.Helper()
	res, err := create.Build(t.Context(),
		create.Image{R: bytes.NewReader(src), Size: int64(len(src)), Name: "source"},
		create.Image{R: bytes.NewReader(tgt), Size: int64(len(tgt)), Name: "target"},
		path, create.Options{Xor: !c.noScratch, Threads: 1},
		create.CowOptions{Version: c.version, Writer: cow.WriterOptions{Compression: c.comp, CompressionFactor: c.factor, NoScratch: c.noScratch}}, nil)
	if err != nil {
		t.Fatalf("%v: building the COW: %v", c, err)
	}
	return res.OpCounts
}

// daemonProc is one incarnation of the daemon.
type daemonProc struct {
	cmd     *exec.Cmd
	stderr  *lockedBuffer
	exited  chan struct{} // closed when Wait returned
	waitErr error         // Wait's result, set before exited is closed
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startDaemonProc re-executes the test binary as `snapuserd args...` with
// workers fresh channels of k as its dm-user control node.
func startDaemonProc(t *testing.T, exe string, k *ktarget, workers int, args ...string) *daemonProc {
	t.Helper()
	var extra []*os.File
	for range workers {
		f, err := k.channel()
		if err != nil {
			t.Fatal(err)
		}
		extra = append(extra, f)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childArgsEnv+"="+strings.Join(args, "\x1f"), childFdsEnv+"="+strconv.Itoa(workers))
	cmd.ExtraFiles = extra
	d := &daemonProc{cmd: cmd, stderr: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = d.stderr
	err := cmd.Start()
	for _, f := range extra {
		f.Close() // the child has its copies
	}
	if err != nil {
		t.Fatal(err)
	}
	go func() { d.waitErr = cmd.Wait(); close(d.exited) }()
	// Whatever way the test ends, no daemon outlives it.
	t.Cleanup(func() { cmd.Process.Kill(); <-d.exited })
	return d
}

func (d *daemonProc) kill() error {
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	err := d.waitErr
	if strings.Contains(d.stderr.String(), "DATA RACE") {
		return fmt.Errorf("race detected in the daemon:\n%s", d.stderr)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL {
		return nil
	}
	return fmt.Errorf("daemon did not die of SIGKILL: %v\n%s", err, d.stderr)
}

// TestMergeSIGKILL is issue 5's crash test with real processes: the daemon
// (this test binary re-executed as snapuserd) serves a snapshot through
// dm-user channels whose kernel side lives in the test process, the merge
// is initiated over the control socket, the daemon is SIGKILLed at random
// moments and restarted (init, start, initiate_merge again, as libsnapshot
// does after a reboot) until the merge completes. A reader issues random
// reads through the dm-user side the whole time, across kills; every byte
// must be the target's. After every kill the COW's merge state must pass
// merge.Check; at the end the base image must equal the target.
func TestMergeSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns daemon processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	iters, maxKills := *crashIterations, 3
	if *soak {
		iters, maxKills = iters*10, 6
	}
	const blocks = 1024 // 4 MiB
	start := time.Now()
	var runs, kills, partial, reads, midMergeReads, restartReads int
	var killOrdered, killScratch, killReplace int // where the kills left the merge
	var fullRestartReads int
	est := 40 * time.Millisecond // running estimate of an uninterrupted merge
	for seed := range iters {
		c := crashCaseOf(seed)
		src, tgt := crashPair(uint64(seed), blocks)
		dir := t.TempDir()
		cowPath, basePath, sock := filepath.Join(dir, "system.cow"), filepath.Join(dir, "system.img"), filepath.Join(dir, "snapuserd.sock")
		counts := buildCrashCow(t, c, src, tgt, cowPath)
		if seed == 0 {
			t.Logf("op counts %v: %v", c, counts)
		}
		if counts["copy"] == 0 || counts["replace"] == 0 || (!c.noScratch && counts["xor"] == 0) {
			t.Fatalf("seed %d %v: op counts %v lack copy/xor/replace ops", seed, c, counts)
		}
		if c.factor > 4096 && multiBlockOps(t, cowPath) == 0 {
			t.Fatalf("seed %d %v: no multi-block Replace ops", seed, c)
		}
		// Every third seed: libsnapshot's usual stack, a separate source
		// device (<part>-src) holding the old image and a base device
		// with the old data only where the COW maps nothing.
		backingPath := basePath
		baseImg := src
		if seed%3 == 2 {
			backingPath = filepath.Join(dir, "system-src.img")
			if err := os.WriteFile(backingPath, src, 0o444); err != nil {
				t.Fatal(err)
			}
			baseImg = garbageAtDestinations(t, cowPath, src, uint64(seed))
		}
		if err := os.WriteFile(basePath, baseImg, 0o644); err != nil {
			t.Fatal(err)
		}
		k := newKTarget(int64(len(tgt)))

		// The reader: random (sector, len) reads, aligned and not, from
		// before the first daemon starts until the merge completed.
		// phase: 0 before the first initiate_merge, 1 merging, 2 after a
		// restart until initiate_merge (the handler's own read path over
		// a partially merged COW).
		var phase atomic.Int32
		readerStop := make(chan struct{})
		readerErr := make(chan error, 1)
		var nReads, nMid, nRestart atomic.Int64
		go func() {
			rng := rand.New(rand.NewPCG(uint64(seed), 7))
			nsec := int64(len(tgt) / 512)
			buf := make([]byte, 128<<10)
			for {
				select {
				case <-readerStop:
					readerErr <- nil
					return
				default:
				}
				sec := rng.Int64N(nsec)
				l := 1 + rng.Int64N(64)
				if rng.IntN(2) == 0 {
					sec &^= 7
					l = 8 * (1 + rng.Int64N(8))
				}
				l = min(l, nsec-sec)
				p := buf[:l*512]
				ph := phase.Load()
				if err := k.readAt(p, sec*512, 20*time.Second); err != nil {
					readerErr <- err
					return
				}
				if want := tgt[sec*512 : (sec+l)*512]; !bytes.Equal(p, want) {
					i := 0
					for p[i] == want[i] {
						i++
					}
					readerErr <- fmt.Errorf("read of %d bytes at sector %d: byte %d (block %d) differs from the target", len(p), sec, i, (sec*512+int64(i))/4096)
					return
				}
				nReads.Add(1)
				switch ph {
				case 1:
					nMid.Add(1)
				case 2:
					nRestart.Add(1)
				}
			}
		}()
		checkReader := func() {
			select {
			case err := <-readerErr:
				t.Fatalf("seed %d %v: reader: %v", seed, c, err)
			default:
			}
		}

		rng := rand.New(rand.NewPCG(uint64(seed), 99))
		seedKills := 0
		var d *daemonProc
		for round := 0; ; round++ {
			if round > maxKills+3 {
				t.Fatalf("seed %d: merge not complete after %d daemon runs", seed, round)
			}
			args := []string{"-socket", sock, "-worker_count", "2", "-num_merge_threads", "2"}
			if seed%4 >= 2 {
				args = append(args, "-io_uring") // merge writes through io_uring where the kernel allows
			}
			d = startDaemonProc(t, exe, k, 2, args...)
			runs++
			cl, err := client.Connect(t.Context(), sock, 10*time.Second)
			if err != nil {
				t.Fatalf("seed %d round %d: %v\n%s", seed, round, err, d.stderr)
			}
			fail := func(format string, args ...any) {
				t.Helper()
				d.kill()
				t.Fatalf("seed %d %v round %d: %s\ndaemon log:\n%s", seed, c, round, fmt.Sprintf(format, args...), d.stderr)
			}
			if _, err := cl.InitDmUserCow("system", cowPath, backingPath, basePath); err != nil {
				fail("init: %v", err)
			}
			if err := cl.AttachDmUser("system"); err != nil {
				fail("start: %v", err)
			}
			st, err := cl.QuerySnapshotStatus("system")
			if err != nil || (st != proto.StatusSnapshot && st != proto.StatusMergeComplete) {
				fail("status before initiate_merge: %q %v", st, err)
			}
			if round > 0 {
				// The restarted handler's own read path over the
				// partially merged COW: the whole device, once.
				if err := readAll(k, tgt); err != nil {
					fail("full read after restart, before initiate_merge: %v", err)
				}
				fullRestartReads++
			}
			// Reads before (re-)initiating the merge go through the
			// handler's own read path: after a kill it serves the
			// partially merged COW (merged ops from base, a durable
			// window from scratch, the rest from the sources).
			time.Sleep(time.Duration(rng.IntN(10)) * time.Millisecond)
			phase.Store(1)
			if err := cl.InitiateMerge("system"); err != nil {
				fail("initiate_merge: %v", err)
			}
			t0 := time.Now()
			// Kill at a random time, or a random time after merge_percent
			// passed a random threshold (spreads the kills over the
			// ordered and the replace phase).
			kill := seedKills < maxKills
			byPercent := rng.IntN(2) == 0
			delay := time.Duration(rng.Int64N(int64(est)))
			threshold := rng.Float64() * 100
			if byPercent {
				delay = time.Duration(rng.Int64N(int64(3 * time.Millisecond)))
			}
			complete := false
			var crossed time.Time
			for !complete {
				st, err := cl.QuerySnapshotStatus("system")
				switch {
				case err != nil:
					fail("getstatus: %v", err)
				case st == proto.StatusMergeComplete:
					complete = true
				case st != proto.StatusMerge:
					fail("status during merge: %q", st)
				}
				if !complete && kill && byPercent && crossed.IsZero() {
					pct, err := cl.GetMergePercent()
					if err != nil || pct < 0 || pct > 100 {
						fail("merge_percent %v %v", pct, err)
					}
					if pct >= threshold {
						crossed = time.Now()
					}
				}
				if !complete && kill && !byPercent && time.Since(t0) >= delay {
					break
				}
				if !complete && kill && byPercent && !crossed.IsZero() && time.Since(crossed) >= delay {
					break
				}
				checkReader()
				if !complete {
					time.Sleep(time.Millisecond)
				}
			}
			cl.Close()
			if complete {
				if !kill || round == 0 {
					est = (3*est + time.Since(t0)) / 4
				}
				break
			}
			if err := d.kill(); err != nil {
				t.Fatalf("seed %d round %d: %v", seed, round, err)
			}
			phase.Store(2)
			kills++
			seedKills++
			r, err := cow.Open(cowPath, nil)
			if err != nil {
				t.Fatal(err)
			}
			cowB, err := os.ReadFile(cowPath)
			if err != nil {
				t.Fatal(err)
			}
			ms, err := merge.Check(bytes.NewReader(cowB), int64(len(cowB)), cowPath, r)
			r.Close()
			if err != nil {
				t.Fatalf("seed %d %v round %d: merge state after SIGKILL: %v", seed, c, round, err)
			}
			if !ms.Complete && (ms.NumMergeOps > 0 || ms.ReadAheadState == 2) {
				partial++
			}
			switch {
			case ms.Complete:
			case ms.ReadAheadState == 2:
				killScratch++
			case ms.NumMergeOps < uint64(ms.OrderedOps):
				killOrdered++
			default:
				killReplace++
			}
			checkReader()
		}
		// Complete: one full read of the device through the daemon, then
		// the base image itself.
		if err := readAll(k, tgt); err != nil {
			t.Fatalf("seed %d %v: full read after the merge: %v", seed, c, err)
		}
		close(readerStop)
		if err := <-readerErr; err != nil {
			t.Fatalf("seed %d %v: reader: %v", seed, c, err)
		}
		if err := d.kill(); err != nil {
			t.Fatal(err)
		}
		k.close()
		base, err := os.ReadFile(basePath)
		if err != nil {
			t.Fatal(err)
		}
		if backingPath != basePath {
			if b, err := os.ReadFile(backingPath); err != nil || !bytes.Equal(b, src) {
				t.Fatalf("seed %d %v: the source device changed (%v)", seed, c, err)
			}
		}
		if !bytes.Equal(base, tgt) {
			for b := 0; b < len(tgt)/4096; b++ {
				if !bytes.Equal(base[b*4096:(b+1)*4096], tgt[b*4096:(b+1)*4096]) {
					t.Fatalf("seed %d %v: base image differs from the target at block %d", seed, c, b)
				}
			}
		}
		reads += int(nReads.Load())
		midMergeReads += int(nMid.Load())
		restartReads += int(nRestart.Load())
	}
	t.Logf("merge estimate %v; kills left: %d in the ordered phase, %d with a durable scratch window pending (read_ahead_state 2), %d in the replace phase",
		est, killOrdered, killScratch, killReplace)
	t.Logf("%d seeds, %d daemon runs, %d SIGKILLs (%d left a partially merged COW), %d verified random reads (%d during merges, %d by restarted daemons before initiate_merge), %d full-device reads after restarts, %v",
		iters, runs, kills, partial, reads, midMergeReads, restartReads, fullRestartReads, time.Since(start).Round(time.Millisecond))
	if kills < iters || partial < iters/3 {
		t.Fatalf("only %d kills, %d mid-merge: the kill timing does not exercise the merge", kills, partial)
	}
}

// garbageAtDestinations returns old with random bytes in every block the COW
// at path writes.
func garbageAtDestinations(t *testing.T, path string, old []byte, seed uint64) []byte {
	r, err := cow.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rng := rand.New(rand.NewPCG(seed, 0xbad))
	base := bytes.Clone(old)
	for _, op := range r.MergeOrder() {
		for i := op.NewBlock * 4096; i < min((op.NewBlock+op.Blocks())*4096, uint64(len(base))); i++ {
			base[i] = byte(rng.Uint32())
		}
	}
	return base
}

// multiBlockOps counts the Replace ops of a COW that cover several blocks.
func multiBlockOps(t *testing.T, path string) int {
	r, err := cow.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n := 0
	for _, op := range r.MergeOrder() {
		if op.Type == cow.OpReplace && op.Blocks() > 1 {
			n++
		}
	}
	return n
}

// readAll reads the whole device through k in 1 MiB requests and compares
// it with want.
func readAll(k *ktarget, want []byte) error {
	buf := make([]byte, 1<<20)
	for off := 0; off < len(want); off += len(buf) {
		p := buf[:min(len(buf), len(want)-off)]
		if err := k.readAt(p, int64(off), 20*time.Second); err != nil {
			return err
		}
		if !bytes.Equal(p, want[off:off+len(p)]) {
			for b := 0; ; b += 4096 {
				if !bytes.Equal(p[b:b+4096], want[off+b:off+b+4096]) {
					return fmt.Errorf("block %d differs from the target", (off+b)/4096)
				}
			}
		}
	}
	return nil
}
