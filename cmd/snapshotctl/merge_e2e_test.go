package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/cow/create"
	"github.com/vabc-go/vabc/cow/create/createtest"
	"github.com/vabc-go/vabc/snapuserd/client"
	"github.com/vabc-go/vabc/snapuserd/snapuserdtest"
)

// buildDaemon builds cmd/snapuserd into dir.
func buildDaemon(t *testing.T, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	out := filepath.Join(dir, "snapuserd")
	cmd := exec.Command(goBin, "build", "-o", out, "github.com/vabc-go/vabc/cmd/snapuserd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/snapuserd: %v\n%s", err, b)
	}
	return out
}

// TestMergeAndWaitAgainstDaemon runs the real snapuserd binary and drives
// two partition merges with `snapshotctl merge` and `snapshotctl wait`
// (num_merge_threads 1: one merges while the other waits), then checks the
// base images; a COW that cannot be merged in place makes `merge` and `wait`
// fail. The dm-user control nodes are FIFOs: the merges need no I/O through
// the devices, only the nodes init opens.
func TestMergeAndWaitAgainstDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon binary")
	}
	dir := t.TempDir()
	bin := buildDaemon(t, dir)
	dmDir := filepath.Join(dir, "dm-user")
	if err := os.Mkdir(dmDir, 0o755); err != nil {
		t.Fatal(err)
	}
	type part struct {
		misc, cow, base string
		target          []byte
	}
	var parts []part
	for _, pr := range createtest.Pairs(21, 700) {
		if pr.Name != "shuffled" && pr.Name != "shifted" {
			continue
		}
		misc := map[string]string{"shuffled": "system", "shifted": "vendor"}[pr.Name]
		p := part{misc: misc, cow: filepath.Join(dir, misc+".cow"), base: filepath.Join(dir, misc+".img"), target: pr.Target}
		if err := os.WriteFile(p.base, pr.Source, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := create.Build(t.Context(), create.Image{R: bytes.NewReader(pr.Source), Size: int64(len(pr.Source))},
			create.Image{R: bytes.NewReader(pr.Target), Size: int64(len(pr.Target))}, p.cow, create.Options{Xor: true},
			create.CowOptions{Version: 3, Writer: cow.WriterOptions{Compression: cow.CompressionZstd, CompressionFactor: 64 << 10}}, nil); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, p)
	}
	for _, misc := range []string{"system", "vendor", "odm"} {
		if err := syscall.Mkfifo(filepath.Join(dmDir, misc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "snapuserd.sock")
	logBuf := &syncBuffer{}
	d := exec.Command(bin, "-socket", sock, "-dm_user_dir", dmDir, "-num_merge_threads", "1", "-io_uring")
	d.Stderr = logBuf
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- d.Wait() }()
	defer func() {
		d.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("daemon exit: %v\n%s", err, logBuf.String())
			}
		case <-time.After(10 * time.Second):
			d.Process.Kill()
			t.Error("daemon did not exit on SIGTERM")
		}
	}()
	c, err := client.Connect(t.Context(), sock, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	for _, p := range parts {
		for _, args := range [][]string{{"init", p.misc, p.cow, p.base, p.base}, {"start", p.misc}} {
			if out, err := ctl(t, sock, args...); err != nil {
				t.Fatalf("%v: %v %q", args, err, out)
			}
		}
	}
	if out, err := ctl(t, sock, "merge", "system", "vendor"); err != nil {
		t.Fatalf("merge: %v %q", err, out)
	}
	var out, errb bytes.Buffer
	if err := run(t.Context(), []string{"-socket", sock, "-interval", "20ms", "wait", "system", "vendor"}, &out, &errb); err != nil {
		t.Fatalf("wait: %v\n%s", err, errb.String())
	}
	if want := "system: snapshot-merge-complete\nvendor: snapshot-merge-complete\n"; out.String() != want {
		t.Fatalf("wait printed %q, want %q", out.String(), want)
	}
	if o, err := ctl(t, sock, "merge-percent"); err != nil || o != "100.000000\n" {
		t.Errorf("merge-percent %q %v", o, err)
	}
	for _, p := range parts {
		if o, err := ctl(t, sock, "status", p.misc); err != nil || o != "snapshot-merge-complete\n" {
			t.Errorf("status %s: %q %v", p.misc, o, err)
		}
		base, err := os.ReadFile(p.base)
		if err != nil || !bytes.Equal(base, p.target) {
			t.Errorf("%s: base image differs from the target after the merge (%v)", p.misc, err)
		}
	}

	// A triple whose source and base differ cannot be merged in place:
	// merge fails, and wait reports the failure with exit status 1.
	tr := snapuserdtest.GenTriple(t, snapuserdtest.TripleSpec{Version: 3, Comp: cow.CompressionLz4, Factor: 64 << 10, Blocks: 256, Seed: 5})
	f := tr.WriteFiles(t, t.TempDir())
	for _, args := range [][]string{{"init", "odm", f.Cow, f.Source, f.Base}, {"start", "odm"}} {
		if o, err := ctl(t, sock, args...); err != nil {
			t.Fatalf("%v: %v %q", args, err, o)
		}
	}
	if _, err := ctl(t, sock, "merge", "odm"); err == nil {
		t.Error("merge of a COW that cannot merge in place succeeded")
	}
	if o, err := ctl(t, sock, "wait", "odm"); err == nil || o != "odm: snapshot-merge-failed\n" {
		t.Errorf("wait on a failed merge: %q %v", o, err)
	}
	if i := strings.Index(logBuf.String(), "uring_writes="); i < 0 {
		t.Errorf("daemon log lacks the io_uring summary")
	} else {
		t.Logf("daemon: %s", strings.SplitN(logBuf.String()[i:], "\n", 2)[0])
	}
	if !strings.Contains(logBuf.String(), "merge complete") {
		t.Errorf("daemon log lacks the merge completion:\n%s", logBuf.String())
	}
}

// syncBuffer is the daemon's stderr, read while the daemon writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestMergeFuseAgainstDaemon is the FUSE user's flow: snapuserd
// -fuse_mount DIR, init/start with snapshotctl, then `snapshotctl merge` and
// `snapshotctl wait` while DIR/system is read again and again; every read
// of the exported file equals the target, before, during and after the merge.
func TestMergeFuseAgainstDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon binary")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		t.Skipf("FUSE test skipped: needs /dev/fuse and root (%v, euid %d)", err, os.Geteuid())
	}
	dir := t.TempDir()
	bin := buildDaemon(t, dir)
	var pair createtest.Pair
	for _, pr := range createtest.Pairs(22, 1024) {
		if pr.Name == "shuffled" {
			pair = pr
		}
	}
	cowPath, base := filepath.Join(dir, "system.cow"), filepath.Join(dir, "system.img")
	if err := os.WriteFile(base, pair.Source, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := create.Build(t.Context(), create.Image{R: bytes.NewReader(pair.Source), Size: int64(len(pair.Source))},
		create.Image{R: bytes.NewReader(pair.Target), Size: int64(len(pair.Target))}, cowPath, create.Options{Xor: true},
		create.CowOptions{Version: 2, Writer: cow.WriterOptions{Compression: cow.CompressionLz4}}, nil); err != nil {
		t.Fatal(err)
	}
	mnt, sock := filepath.Join(dir, "mnt"), filepath.Join(dir, "snapuserd.sock")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	logBuf := &syncBuffer{}
	d := exec.Command(bin, "-socket", sock, "-fuse_mount", mnt)
	d.Stderr = logBuf
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- d.Wait() }()
	defer func() {
		d.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("daemon exit: %v\n%s", err, logBuf.String())
			}
		case <-time.After(10 * time.Second):
			d.Process.Kill()
			t.Error("daemon did not exit on SIGTERM")
		}
	}()
	c, err := client.Connect(t.Context(), sock, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	for _, args := range [][]string{{"init", "system", cowPath, base, base}, {"start", "system"}} {
		if out, err := ctl(t, sock, args...); err != nil {
			t.Fatalf("%v: %v %q", args, err, out)
		}
	}
	exported := filepath.Join(mnt, "system")
	stop := make(chan struct{})
	readerDone := make(chan error, 1)
	var fullReads int
	go func() {
		for {
			got, err := readUncached(exported)
			if err != nil {
				readerDone <- err
				return
			}
			if !bytes.Equal(got, pair.Target) {
				readerDone <- errors.New("the exported file differs from the target")
				return
			}
			fullReads++
			select {
			case <-stop:
				readerDone <- nil
				return
			default:
			}
		}
	}()
	if out, err := ctl(t, sock, "merge", "system"); err != nil {
		t.Fatalf("merge: %v %q", err, out)
	}
	if out, err := ctl(t, sock, "wait", "system"); err != nil || out != "system: snapshot-merge-complete\n" {
		t.Fatalf("wait: %q %v\n%s", out, err, logBuf.String())
	}
	close(stop)
	if err := <-readerDone; err != nil {
		t.Fatalf("reader of %s: %v", exported, err)
	}
	got, err := os.ReadFile(base)
	if err != nil || !bytes.Equal(got, pair.Target) {
		t.Fatalf("base image differs from the target after the merge (%v)", err)
	}
	t.Logf("%d full reads of the exported file during the merge", fullReads)
}

// readUncached drops the file's page cache (the FUSE export keeps it across
// opens), so that the read reaches the daemon, then reads the whole file.
func readUncached(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}
