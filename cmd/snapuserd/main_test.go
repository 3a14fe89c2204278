package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/snapuserd/client"
	"github.com/vabc-go/vabc/snapuserd/legacy"
	"github.com/vabc-go/vabc/snapuserd/snapuserdtest"
)

func TestFlagParsing(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
		chk  func(*config) bool
	}{
		{[]string{"-socket-handoff"}, true, func(c *config) bool { return c.socketHandoff }},
		{[]string{"--worker-count=3", "--no_socket", "a,b,c,d"}, true, func(c *config) bool {
			return c.workerCount == 3 && c.noSocket && len(c.positional) == 1 && c.workerSet
		}},
		{[]string{"-cow_op_merge_size=16", "-o_direct", "-io_uring", "-user_snapshot"}, true, func(c *config) bool {
			return c.cowOpMerge == 16 && c.oDirect && c.ioUring && c.userSnapshot && !c.workerSet
		}},
		{[]string{"-num-merge-threads=3", "-merge_thread_priority=5", "-merge_io_idle=false"}, true, func(c *config) bool {
			return c.mergeThreads == 3 && c.mergeNice == 5 && !c.mergeIOIdle
		}},
		{nil, true, func(c *config) bool { return c.mergeThreads == 2 && c.mergeNice == 10 && c.mergeIOIdle }},
		{[]string{"-num_merge_threads=0"}, false, nil},  // invalid merge thread count
		{[]string{"-cow_op_merge_size=-1"}, false, nil}, // negative cap
		{[]string{"a,b,c,d"}, false, nil},               // positional without -no_socket
		{[]string{"-worker_count=0"}, false, nil},       // invalid count
		{[]string{"-no_such_flag"}, false, nil},         // unknown flag
		{[]string{"-fuse_mount", "/x", "-dm_user_dir", "/d"}, true, func(c *config) bool { return c.fuseMount == "/x" && c.dmUserDir == "/d" }},
	} {
		c, err := parse(tc.args, io.Discard)
		if (err == nil) != tc.ok {
			t.Errorf("%v: err %v", tc.args, err)
			continue
		}
		if tc.ok && !tc.chk(c) {
			t.Errorf("%v: parsed %+v", tc.args, c)
		}
	}
}

func needFuse(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("FUSE test skipped: /dev/fuse unavailable (%v)", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("FUSE test skipped: needs root for mount(2)")
	}
}

type daemon struct {
	cancel context.CancelFunc
	done   chan error
	sock   string
	mnt    string
}

func startDaemon(t *testing.T, extra ...string) *daemon {
	t.Helper()
	dir := t.TempDir()
	d := &daemon{done: make(chan error, 1), sock: filepath.Join(dir, "snapuserd.sock"), mnt: filepath.Join(dir, "mnt")}
	os.Mkdir(d.mnt, 0o755)
	ctx, cancel := context.WithCancel(t.Context())
	d.cancel = cancel
	args := append([]string{"-fuse_mount", d.mnt, "-socket", d.sock}, extra...)
	c, err := parse(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { d.done <- serve(ctx, c, log, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			t.Error("daemon did not exit")
		}
	})
	return d
}

func waitGone(t *testing.T, p string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still exists", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFuseEndToEnd runs the daemon as a user would: -fuse_mount + -socket,
// init/start over the control protocol, then cmp the exported file with
// the target image; delete removes the file, stop ends the daemon.
func TestFuseEndToEnd(t *testing.T) {
	needFuse(t)
	d := startDaemon(t)
	tr := snapuserdtest.GenTriple(t, snapuserdtest.TripleSpec{Version: 3, Comp: cow.CompressionLz4, Factor: 64 << 10, Blocks: 2048, Seed: 9})
	f := tr.WriteFiles(t, t.TempDir())
	c, err := client.Connect(t.Context(), d.sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.InitDmUserCow("system_b", f.Cow, f.Source, f.Base); err != nil {
		t.Fatal(err)
	}
	exported := filepath.Join(d.mnt, "system_b")
	if _, err := os.Stat(exported); err == nil {
		t.Fatal("file visible before start")
	}
	if err := c.AttachDmUser("system_b"); err != nil {
		t.Fatal(err)
	}
	if cmp, err := exec.LookPath("cmp"); err == nil {
		if out, err := exec.Command(cmp, exported, f.Target).CombinedOutput(); err != nil {
			t.Fatalf("cmp: %v: %s", err, out)
		}
	}
	got, err := os.ReadFile(exported)
	if err != nil || !bytes.Equal(got, tr.Target) {
		t.Fatalf("exported file differs from target (err %v)", err)
	}
	if err := c.WaitForDeviceDelete("system_b"); err != nil {
		t.Fatal(err)
	}
	waitGone(t, exported)
	if err := c.StopSnapuserd(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("daemon: %v", err)
		}
		d.done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not stop")
	}
}

func TestNoSocketFuse(t *testing.T) {
	needFuse(t)
	tr := snapuserdtest.GenTriple(t, snapuserdtest.TripleSpec{Version: 2, Comp: cow.CompressionGz, Blocks: 256, Seed: 4})
	f := tr.WriteFiles(t, t.TempDir())
	mnt := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-no_socket", "-fuse_mount", mnt, "vendor," + f.Cow + "," + f.Source + "," + f.Base}, io.Discard, io.Discard)
	}()
	p := filepath.Join(mnt, "vendor")
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := os.ReadFile(p)
		if err == nil {
			if !bytes.Equal(got, tr.Target) {
				t.Fatal("exported file differs from target")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("export did not appear: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// With -user_snapshot the legacy 3-part argument is refused with a clear error.
	err := run(t.Context(), []string{"-no_socket", "-user_snapshot", "-fuse_mount", t.TempDir(), "x," + f.Cow + "," + f.Source}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "legacy") {
		t.Errorf("legacy init with -user_snapshot: %v", err)
	}
}

// writeLegacyCow writes a 64-block base and a v2 COW replacing blocks 3–10.
func writeLegacyCow(t *testing.T, dir string) (cowPath, basePath string) {
	t.Helper()
	cowPath, basePath = filepath.Join(dir, "system.cow"), filepath.Join(dir, "base.img")
	if err := os.WriteFile(basePath, make([]byte, 64*4096), 0o644); err != nil {
		t.Fatal(err)
	}
	fh, err := os.Create(cowPath)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	w, err := cow.NewWriterV2(fh, cow.WriterOptions{MaxBlocks: 64})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddRawBlocks(3, bytes.Repeat([]byte{'n'}, 8*4096)); err != nil {
		t.Fatal(err)
	}
	if err := w.Finalize(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return cowPath, basePath
}

// TestSocketLegacyInit: over the control socket a 4-field init answers
// success with the synthesized store's size (header, area 0 and 8 data
// chunks: 10 chunks = 80 sectors); with -user_snapshot it fails.
func TestSocketLegacyInit(t *testing.T) {
	needFuse(t)
	cowPath, basePath := writeLegacyCow(t, t.TempDir())
	for _, tc := range []struct {
		flags []string
		want  uint64
	}{{nil, 80}, {[]string{"-user_snapshot"}, 0}} {
		d := startDaemon(t, tc.flags...)
		c, err := client.Connect(t.Context(), d.sock, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		n, err := c.InitDmUserCow("system", cowPath, basePath, "")
		if tc.want == 0 {
			if err == nil {
				t.Errorf("%v: legacy init answered %d sectors, want fail", tc.flags, n)
			}
		} else if err != nil || n != tc.want {
			t.Errorf("%v: legacy init: %d sectors, %v; want %d", tc.flags, n, err, tc.want)
		}
		c.Close()
	}
}

// TestNoSocketLegacy: without -user_snapshot a 3-part argument serves the
// COW as a dm-snapshot persistent exception store (here over FUSE).
func TestNoSocketLegacy(t *testing.T) {
	needFuse(t)
	cowPath, basePath := writeLegacyCow(t, t.TempDir())
	mnt := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-no_socket", "-fuse_mount", mnt, "vendor," + cowPath + "," + basePath}, io.Discard, io.Discard)
	}()
	p := filepath.Join(mnt, "vendor")
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := os.ReadFile(p)
		if err == nil {
			if len(got) < 8192 || binary.LittleEndian.Uint32(got) != legacy.Magic || binary.LittleEndian.Uint32(got[12:]) != legacy.ChunkSectors {
				t.Fatalf("legacy export (%d bytes) does not start with a dm-snapshot disk_header", len(got))
			}
			if binary.LittleEndian.Uint64(got[4096+8:]) == 0 {
				t.Fatal("legacy export has no exception in area 0")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("export did not appear: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// diffCow writes a COW (v3, lz4, 64 KiB units) turning source into target:
// unchanged blocks are left unmapped (served from the base), zero blocks
// become Zero ops, blocks found in the source become Copy ops, the rest
// Replace runs.
func diffCow(t *testing.T, path string, source, target []byte) {
	t.Helper()
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	const bs = 4096
	w, err := cow.NewWriterV3(fh, cow.WriterOptions{Compression: cow.CompressionLz4, CompressionFactor: 64 << 10, MaxBlocks: uint64(len(target) / bs)})
	if err != nil {
		t.Fatal(err)
	}
	idx := map[[32]byte]int{}
	for b := len(source)/bs - 1; b >= 0; b-- {
		idx[sha256.Sum256(source[b*bs:(b+1)*bs])] = b
	}
	zero := make([]byte, bs)
	var run []byte
	runStart := 0
	flush := func() {
		if len(run) > 0 {
			if err := w.AddRawBlocks(uint64(runStart), run); err != nil {
				t.Fatal(err)
			}
			run = nil
		}
	}
	for b := 0; b < len(target)/bs; b++ {
		blk := target[b*bs : (b+1)*bs]
		switch src, found := idx[sha256.Sum256(blk)]; {
		case bytes.Equal(blk, source[b*bs:(b+1)*bs]):
			flush()
		case bytes.Equal(blk, zero):
			flush()
			if err := w.AddZeroBlocks(uint64(b), 1); err != nil {
				t.Fatal(err)
			}
		case found:
			flush()
			if err := w.AddCopy(uint64(b), uint64(src), 1); err != nil {
				t.Fatal(err)
			}
		default:
			if len(run) == 0 {
				runStart = b
			}
			run = append(run, blk...)
		}
	}
	flush()
	if err := w.Finalize(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func mkext4(t *testing.T, img string, files map[string]string) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0",
		"-U", "01234567-89ab-cdef-0123-456789abcdef", "-d", dir, img).CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
}

// TestExt4LoopMount: a snapshot of an ext4 image served over FUSE is
// attached with losetup and mounted read-only; the mounted tree shows the
// target's files.
func TestExt4LoopMount(t *testing.T) {
	needFuse(t)
	for _, tool := range []string{"mkfs.ext4", "losetup", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("ext4 loop test skipped: %s not installed", tool)
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("ext4 loop test skipped: no loop devices (%v)", err)
	}
	dir := t.TempDir()
	base, target := filepath.Join(dir, "base.img"), filepath.Join(dir, "target.img")
	mkext4(t, base, map[string]string{"build.prop": "ro.build.id=OLD\n", "old.txt": strings.Repeat("old data\n", 3000)})
	mkext4(t, target, map[string]string{"build.prop": "ro.build.id=NEW\n", "new.txt": strings.Repeat("fresh bytes\n", 5000)})
	srcB, _ := os.ReadFile(base)
	tgtB, _ := os.ReadFile(target)
	cowPath := filepath.Join(dir, "system.cow")
	diffCow(t, cowPath, srcB, tgtB)

	d := startDaemon(t)
	c, err := client.Connect(t.Context(), d.sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.InitDmUserCow("system", cowPath, base, base); err != nil {
		t.Fatal(err)
	}
	if err := c.AttachDmUser("system"); err != nil {
		t.Fatal(err)
	}
	exported := filepath.Join(d.mnt, "system")
	out, err := exec.Command("losetup", "-r", "-f", "--show", exported).CombinedOutput()
	if err != nil {
		t.Skipf("ext4 loop test skipped: losetup on a FUSE file failed: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", loop).Run()
	mp := filepath.Join(dir, "mp")
	os.Mkdir(mp, 0o755)
	if out, err := exec.Command("mount", "-t", "ext4", "-o", "ro", loop, mp).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	defer exec.Command("umount", mp).Run()
	got, err := os.ReadFile(filepath.Join(mp, "build.prop"))
	if err != nil || string(got) != "ro.build.id=NEW\n" {
		t.Fatalf("build.prop = %q, %v", got, err)
	}
	got, err = os.ReadFile(filepath.Join(mp, "new.txt"))
	if err != nil || string(got) != strings.Repeat("fresh bytes\n", 5000) {
		t.Fatalf("new.txt: %v (len %d)", err, len(got))
	}
	if _, err := os.Stat(filepath.Join(mp, "old.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old.txt visible in the snapshot: %v", err)
	}
	if out, err := exec.Command("umount", mp).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v: %s", err, out)
	}
	if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
		t.Fatalf("losetup -d: %v: %s", err, out)
	}
}

// TestSocketHandoff follows the boot lifecycle (spec §10): a -no_socket
// daemon serves its handlers, then "snapuserd -socket_handoff" hands it the
// control socket through the proxy socket and exits; clients then talk to
// the running daemon.
func TestSocketHandoff(t *testing.T) {
	needFuse(t)
	tr := snapuserdtest.GenTriple(t, snapuserdtest.TripleSpec{Version: 3, Comp: cow.CompressionZstd, Factor: 4096, Blocks: 256, Seed: 6})
	f := tr.WriteFiles(t, t.TempDir())
	dir := t.TempDir()
	sock, mnt := filepath.Join(dir, "snapuserd"), filepath.Join(dir, "mnt")
	alive := filepath.Join(dir, "daemon-alive-indicator")
	os.Mkdir(mnt, 0o755)
	done := make(chan error, 1)
	go func() {
		done <- run(t.Context(), []string{"-no_socket", "-socket", sock, "-fuse_mount", mnt, "-daemon_alive_indicator", alive,
			"system," + f.Cow + "," + f.Source + "," + f.Base}, io.Discard, io.Discard)
	}()
	if err := run(t.Context(), []string{"-socket-handoff", "-socket", sock}, io.Discard, io.Discard); err != nil {
		t.Fatalf("proxy: %v", err)
	}
	// Every handler ran before the daemon took the socket: the indicator
	// init waits for at the transition is there.
	if b, err := os.ReadFile(alive); err != nil || string(b) != "1" {
		t.Fatalf("daemon-alive indicator: %q %v", b, err)
	}
	c, err := client.Connect(t.Context(), sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if st, err := c.QuerySnapshotStatus("system"); err != nil || st != "snapshot" {
		t.Fatalf("status through the handed-off socket: %q %v", st, err)
	}
	got, err := os.ReadFile(filepath.Join(mnt, "system"))
	if err != nil || !bytes.Equal(got, tr.Target) {
		t.Fatalf("export: %v", err)
	}
	if err := c.StopSnapuserd(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not stop")
	}
}

// TestDmUserInitNeedsControlNode: without -fuse_mount, init opens
// <dm_user_dir>/<misc> at once (AOSP opens the control node at init), so a
// missing node fails init with "fail".
func TestDmUserInitNeedsControlNode(t *testing.T) {
	tr := snapuserdtest.GenTriple(t, snapuserdtest.TripleSpec{Version: 2, Comp: cow.CompressionNone, Blocks: 64, Seed: 8})
	f := tr.WriteFiles(t, t.TempDir())
	dir := t.TempDir()
	sock := filepath.Join(dir, "s")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-socket", sock, "-dm_user_dir", filepath.Join(dir, "dm-user")}, io.Discard, io.Discard)
	}()
	c, err := client.Connect(t.Context(), sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.InitDmUserCow("system", f.Cow, f.Source, f.Base); err == nil || !strings.Contains(err.Error(), `"fail"`) {
		t.Fatalf("init without a control node: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
