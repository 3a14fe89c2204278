package main

// The snapuserd scenarios: Android's userspace-snapshot stack (snapuserd.md §1 "Mode B") on
// the real kernel. e2e/run.sh builds, on the host, a base and a target ext4 image
// (mkfs.ext4 -d of two trees) and a COW between them (cowctl create), attaches them as
// virtio disks and passes the target's SHA-256 and a token file's content on the kernel
// command line (vabc.snap=<sha256>:<token>). In the guest the product binaries
// /bin/snapuserd and /bin/snapshotctl drive everything through the control socket, over our
// dm-user module, exactly as libsnapshot would: dm-user device first, then init, start,
// reads, merge, swap to dm-linear, delete. After the VM reboots, the base disks must equal
// the target (the after-reboot half runs in a second boot, see main.go).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/kernel/dm"
	"github.com/vabc-go/vabc/snapuserd/client"
)

// Disks attached by e2e/run.sh for the snapuserd scenarios.
const (
	diskUserBase   = "/dev/vdc" // snapuserd-user: base partition (source; merged into)
	diskUserCOW    = "/dev/vdd" // snapuserd-user: COW
	diskKillBase   = "/dev/vde" // snapuserd-merge-kill: base
	diskKillCOW    = "/dev/vdf" // snapuserd-merge-kill: COW
	diskTargetCopy = "/dev/vdg" // read-only copy of the target image (dm-linear bench reference)
	diskPristBase  = "/dev/vdh" // read-only pristine base image
	diskPristCOW   = "/dev/vdi" // read-only pristine COW

	tokenFile = "vabc/token.txt" // written by run.sh into the target tree only
)

func init() {
	register(scenario{name: "snapuserd-user", run: snapuserdUser, afterReboot: snapuserdUserAfterReboot, limit: 150 * time.Second})
	register(scenario{name: "snapuserd-merge-kill", run: snapuserdMergeKill, afterReboot: snapuserdKillAfterReboot, limit: 150 * time.Second})
}

// snapParams are the host-computed expectations (vabc.snap=<sha256>:<token>).
type snapParams struct {
	sha256 string
	token  string
}

func snapParamsFrom(cmdline string) (snapParams, error) {
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, "vabc.snap="); ok {
			sum, tok, ok := strings.Cut(v, ":")
			if !ok || len(sum) != 64 || tok == "" {
				return snapParams{}, fmt.Errorf("malformed vabc.snap=%q on the kernel command line", v)
			}
			return snapParams{sha256: sum, token: tok}, nil
		}
	}
	return snapParams{}, errors.New("no vabc.snap= on the kernel command line (e2e/run.sh builds the snapshot images)")
}

// hashDevice returns the hex SHA-256 of a whole block device read with O_DIRECT.
func hashDevice(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	buf := alignedBuf(1 << 20)
	defer unix.Munmap(buf[:cap(buf)])
	h := sha256.New()
	var off int64
	for {
		n, err := f.ReadAt(buf, off)
		h.Write(buf[:n])
		off += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("read %s at %d: %w", path, off, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func expectHash(path, want, what string) error {
	got, err := hashDevice(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if got != want {
		return fmt.Errorf("%s: %s has sha256 %.16s…, want the target's %.16s…", what, path, got, want)
	}
	return nil
}

// copyDisk copies the whole of src over the start of dst with O_DIRECT (the merge writes
// the base and the COW header, so each run starts from the pristine images: scenarios do
// not depend on earlier runs, and vabc.repeat works).
func copyDisk(src, dst string) error {
	in, err := os.OpenFile(src, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer out.Close()
	buf := alignedBuf(1 << 20)
	defer unix.Munmap(buf[:cap(buf)])
	var off int64
	for {
		n, rerr := in.ReadAt(buf, off)
		if n > 0 {
			if _, err := out.WriteAt(buf[:n], off); err != nil {
				return fmt.Errorf("write %s at %d: %w", dst, off, err)
			}
			off += int64(n)
		}
		if rerr == io.EOF {
			return out.Sync()
		}
		if rerr != nil {
			return fmt.Errorf("read %s at %d: %w", src, off, rerr)
		}
	}
}

// restore waits for the disks and resets base and COW to the pristine images.
func restore(ctx context.Context, base, cow string) error {
	for _, d := range []string{base, cow, diskTargetCopy, diskPristBase, diskPristCOW} {
		if err := waitDisk(ctx, d); err != nil {
			return err
		}
	}
	if err := copyDisk(diskPristBase, base); err != nil {
		return err
	}
	return copyDisk(diskPristCOW, cow)
}

// waitDisk waits for a virtio disk to be probed.
func waitDisk(ctx context.Context, path string) error {
	return waitFor(ctx, "disk "+path, 20*time.Millisecond, func() (bool, error) {
		_, err := os.Stat(path)
		return err == nil, nil
	})
}

// checkMount mounts dev read-only (ext4, no journal replay) and checks the token file.
func checkMount(ctx context.Context, dev, dir, token string) error {
	os.MkdirAll(dir, 0o755)
	if err := unix.Mount(dev, dir, "ext4", unix.MS_RDONLY, "noload"); err != nil {
		return fmt.Errorf("mount -t ext4 -o ro,noload %s %s: %w", dev, dir, err)
	}
	defer func() {
		if err := unix.Unmount(dir, 0); err != nil {
			logf("umount %s: %v", dir, err)
		}
	}()
	b, err := os.ReadFile(dir + "/" + tokenFile)
	if err != nil {
		return fmt.Errorf("snapshot mounted from %s lacks the target's new file: %w", dev, err)
	}
	if got := strings.TrimSpace(string(b)); got != token {
		return fmt.Errorf("%s/%s = %q, want %q", dir, tokenFile, got, token)
	}
	return nil
}

// snapshotctl runs /bin/snapshotctl against a socket and returns its trimmed stdout.
func snapshotctl(ctx context.Context, sock string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "/bin/snapshotctl", append([]string{"-socket", sock}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("snapshotctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// snapStack is one partition served by snapuserd in userspace-snapshot mode.
type snapStack struct {
	e       *env
	c       *dm.Control
	dev     string // dm device name (the partition)
	misc    string // dm-user misc name
	base    string // base block device
	cow     string // COW block device
	sock    string
	sectors uint64
	path    string // /dev/mapper/<dev>
	d       *daemonProc
}

func newSnapStack(e *env, c *dm.Control, dev, base, cow string) *snapStack {
	return &snapStack{e: e, c: c, dev: dev, misc: dev + "-user-cow", base: base, cow: cow, sock: "/run/snapuserd-" + dev}
}

// startDaemon starts /bin/snapuserd with its own control socket and waits until it answers.
func (s *snapStack) startDaemon(ctx context.Context) error {
	d, err := startProcess(s.e, "snapuserd", "/bin/snapuserd", "-socket", s.sock)
	if err != nil {
		return err
	}
	s.d = d
	cl, err := client.Connect(ctx, s.sock, 10*time.Second)
	if err != nil {
		return fmt.Errorf("snapuserd did not open %s: %w", s.sock, err)
	}
	defer cl.Close()
	if r, err := cl.Query(); err != nil || r != "active" {
		return fmt.Errorf("query: %q, %v", r, err)
	}
	return nil
}

// create makes the dm-user device (libsnapshot creates it before init).
func (s *snapStack) create() error {
	n, err := sectors(s.base)
	if err != nil {
		return err
	}
	s.sectors = n
	s.path, err = s.c.CreateDevice(s.dev, []dm.Target{dm.User(0, n, s.misc)}, nil)
	return err
}

// initStart sends init and start through snapshotctl and waits for the daemon's channel.
func (s *snapStack) initStart(ctx context.Context) error {
	out, err := snapshotctl(ctx, s.sock, "init", s.misc, s.cow, s.base, s.base)
	if err != nil {
		return err
	}
	n, err := strconv.ParseUint(out, 10, 64)
	if err != nil {
		return fmt.Errorf("snapshotctl init printed %q, want a sector count", out)
	}
	if n != s.sectors {
		return fmt.Errorf("init replied %d sectors, the base device has %d", n, s.sectors)
	}
	if _, err := snapshotctl(ctx, s.sock, "start", s.misc); err != nil {
		return err
	}
	return waitFor(ctx, "snapuserd channel on "+s.dev, 10*time.Millisecond, func() (bool, error) {
		st, err := userStatus(s.c, s.dev)
		return err == nil && st.Channels >= 1, err
	})
}

// mergeLimit bounds one merge of the scenario's images (~15 MiB of COW data; a few seconds
// under TCG), so a daemon that never finishes fails fast instead of eating the VM's budget.
const mergeLimit = 60 * time.Second

// mergeAndWait initiates the merge and waits for snapshot-merge-complete. When want is not
// empty, the whole partition is read (O_DIRECT) while the merge runs and must hash to want:
// reads racing the merge see the target, whichever side of the merge window they hit.
func (s *snapStack) mergeAndWait(ctx context.Context, want string) error {
	ctx, cancel := context.WithTimeout(ctx, mergeLimit)
	defer cancel()
	if _, err := snapshotctl(ctx, s.sock, "merge", s.misc); err != nil {
		return err
	}
	readErr := make(chan error, 1)
	if want != "" {
		go func() {
			err := expectHash(s.path, want, "snapshot read during the merge")
			if err == nil {
				st, _ := snapshotctl(ctx, s.sock, "status", s.misc)
				s.e.logf("read during the merge ok; merge status when it ended: %s", st)
			}
			readErr <- err
		}()
	} else {
		readErr <- nil
	}
	if err := s.waitMerge(ctx); err != nil {
		<-readErr
		return err
	}
	return <-readErr
}

func (s *snapStack) waitMerge(ctx context.Context) error {
	out, err := snapshotctl(ctx, s.sock, "-interval", "100ms", "wait", s.misc)
	if err != nil {
		if ctx.Err() != nil {
			st, _ := snapshotctl(context.Background(), s.sock, "status", s.misc)
			pct, _ := snapshotctl(context.Background(), s.sock, "merge-percent")
			return fmt.Errorf("merge not complete after %s (status %q, %s%%)", mergeLimit, st, pct)
		}
		return err
	}
	if want := s.misc + ": snapshot-merge-complete"; out != want {
		return fmt.Errorf("snapshotctl wait printed %q, want %q", out, want)
	}
	return nil
}

// finish swaps the partition to dm-linear over the merged base (libsnapshot after merge
// completion), deletes the handler, removes the device and stops the daemon.
func (s *snapStack) finish(ctx context.Context, want string) error {
	if err := s.c.Reload(s.dev, []dm.Target{dm.Linear(0, s.sectors, s.base, 0)}); err != nil {
		return fmt.Errorf("swap %s to dm-linear: %w", s.dev, err)
	}
	if err := expectHash(s.path, want, "dm-linear over the merged base"); err != nil {
		return err
	}
	if _, err := snapshotctl(ctx, s.sock, "delete", s.misc); err != nil {
		return err
	}
	if err := s.c.Remove(s.dev, false); err != nil {
		return err
	}
	if _, err := snapshotctl(ctx, s.sock, "stop"); err != nil {
		return err
	}
	code, err := s.d.wait(10 * time.Second)
	s.d = nil
	if err != nil {
		return fmt.Errorf("snapuserd after stop: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("snapuserd exited with status %d after stop", code)
	}
	return nil
}

func (s *snapStack) close() {
	if s.d != nil {
		s.d.kill()
		s.d = nil
	}
	cleanup(s.c, s.dev)
}

func (s *snapStack) failf(err error) error {
	if err == nil || s.d == nil {
		return err
	}
	if out := s.d.output(); out != "" {
		lines := strings.Split(strings.TrimSpace(out), "\n")
		s.e.logf("last snapuserd output: %s", lines[len(lines)-1])
	}
	return err
}

// snapuserdUser: the partition reads equal the target, the ext4 snapshot mounts with the new
// files, snapshotctl merge completes, and the base equals the target (now, and after the
// reboot). Also measures the snapuserd read rate against dm-linear over the target image.
func snapuserdUser(ctx context.Context, e *env) error {
	p, err := snapParamsFrom(cmdline())
	if err != nil {
		return err
	}
	if err := restore(ctx, diskUserBase, diskUserCOW); err != nil {
		return err
	}
	c, err := dm.Open()
	if err != nil {
		return err
	}
	defer c.Close()
	s := newSnapStack(e, c, "system_b", diskUserBase, diskUserCOW)
	defer s.close()
	err = func() error {
		if err := expectHash(diskTargetCopy, p.sha256, "target image disk"); err != nil {
			return err
		}
		if err := s.create(); err != nil {
			return err
		}
		if err := s.startDaemon(ctx); err != nil {
			return err
		}
		if err := s.initStart(ctx); err != nil {
			return err
		}
		if err := expectHash(s.path, p.sha256, "snapshot before merge"); err != nil {
			return err
		}
		if err := checkMount(ctx, s.path, "/mnt/snap", p.token); err != nil {
			return err
		}
		if err := benchVsLinear(ctx, e, c, s.path, s.sectors); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		t0 := time.Now()
		if err := s.mergeAndWait(ctx, p.sha256); err != nil {
			return err
		}
		e.logf("merge took %.2fs", time.Since(t0).Seconds())
		if err := expectHash(s.path, p.sha256, "snapshot after merge"); err != nil {
			return err
		}
		if err := s.finish(ctx, p.sha256); err != nil {
			return err
		}
		return expectHash(diskUserBase, p.sha256, "base after merge")
	}()
	return s.failf(err)
}

func snapuserdUserAfterReboot(ctx context.Context, e *env) error {
	p, err := snapParamsFrom(cmdline())
	if err != nil {
		return err
	}
	if err := waitDisk(ctx, diskUserBase); err != nil {
		return err
	}
	if err := expectHash(diskUserBase, p.sha256, "base after reboot"); err != nil {
		return err
	}
	return checkMount(ctx, diskUserBase, "/mnt/base", p.token)
}

// benchVsLinear reads the snapuserd-served partition and a dm-linear device over the target
// image copy with dd iflag=direct in the same boot and prints the ratio (the VM part of
// make bench).
func benchVsLinear(ctx context.Context, e *env, c *dm.Control, userPath string, n uint64) error {
	const lin = "t-snap-linear"
	linPath, err := c.CreateDevice(lin, []dm.Target{dm.Linear(0, n, diskTargetCopy, 0)}, &dm.CreateOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer cleanup(c, lin)
	size := int(n*512) &^ (1<<20 - 1)
	var userRate, linRate float64
	for i := 0; i < 2; i++ { // best of two: TCG timing is noisy
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
	fmt.Printf("VMTEST-METRIC: snapuserd_read_mib_s=%.1f linear_read_mib_s=%.1f ratio=%.3f size_mib=%d\n",
		userRate, linRate, userRate/linRate, size>>20)
	return nil
}

// snapuserdMergeKill: SIGKILL the daemon in the middle of the merge; a new daemon (init and
// start again: the dm-user channels re-open) still serves the target, the re-initiated merge
// completes, and the base equals the target.
func snapuserdMergeKill(ctx context.Context, e *env) error {
	p, err := snapParamsFrom(cmdline())
	if err != nil {
		return err
	}
	if err := restore(ctx, diskKillBase, diskKillCOW); err != nil {
		return err
	}
	c, err := dm.Open()
	if err != nil {
		return err
	}
	defer c.Close()
	s := newSnapStack(e, c, "product_b", diskKillBase, diskKillCOW)
	defer s.close()
	err = func() error {
		if err := s.create(); err != nil {
			return err
		}
		if err := s.startDaemon(ctx); err != nil {
			return err
		}
		if err := s.initStart(ctx); err != nil {
			return err
		}
		cl, err := client.Connect(ctx, s.sock, 5*time.Second)
		if err != nil {
			return err
		}
		defer cl.Close()
		if err := cl.InitiateMerge(s.misc); err != nil {
			return fmt.Errorf("initiate_merge: %w", err)
		}
		// Kill as soon as the merge has made progress but is not complete.
		pctx, cancel := context.WithTimeout(ctx, mergeLimit)
		defer cancel()
		t0 := time.Now()
		var pct float64
		for {
			if pctx.Err() != nil {
				return fmt.Errorf("merge made no progress within %s", mergeLimit)
			}
			st, err := cl.QuerySnapshotStatus(s.misc)
			if err != nil {
				return err
			}
			if st == "snapshot-merge-complete" || st == "snapshot-merge-failed" {
				return fmt.Errorf("merge reached %s after %s before it could be killed (make the COW larger)", st, time.Since(t0).Round(time.Millisecond))
			}
			if pct, err = cl.GetMergePercent(); err != nil {
				return err
			}
			if pct > 0 && pct < 100 {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		cl.Close()
		s.d.cmd.Process.Signal(syscall.SIGKILL)
		<-s.d.done
		s.d = nil
		e.logf("SIGKILLed snapuserd at %.1f%% merged, %s after initiate_merge", pct, time.Since(t0).Round(time.Millisecond))
		if err := expectNotEqualHash(s.base, p.sha256); err != nil {
			return err
		}

		// Restart: a new daemon, init + start again (the dm-user device stayed).
		if err := s.startDaemon(ctx); err != nil {
			return fmt.Errorf("restart: %w", err)
		}
		if err := s.initStart(ctx); err != nil {
			return fmt.Errorf("restart: %w", err)
		}
		st, err := snapshotctl(ctx, s.sock, "status", s.misc)
		if err != nil {
			return err
		}
		e.logf("status after restart: %s", st)
		if st == "snapshot-merge-failed" {
			return fmt.Errorf("status after restart is %s", st)
		}
		// A half-merged base + COW must still read as the target.
		if err := expectHash(s.path, p.sha256, "snapshot after the kill, before the merge resumes"); err != nil {
			return err
		}
		if err := s.mergeAndWait(ctx, p.sha256); err != nil {
			return fmt.Errorf("merge after restart: %w", err)
		}
		if err := expectHash(s.path, p.sha256, "snapshot after merge"); err != nil {
			return err
		}
		if err := s.finish(ctx, p.sha256); err != nil {
			return err
		}
		return expectHash(diskKillBase, p.sha256, "base after merge")
	}()
	return s.failf(err)
}

// expectNotEqualHash guards the kill test itself: if the base already equals the target,
// the kill did not land mid-merge.
func expectNotEqualHash(path, target string) error {
	got, err := hashDevice(path)
	if err != nil {
		return err
	}
	if got == target {
		return fmt.Errorf("%s already equals the target when the daemon was killed: the kill was not mid-merge", path)
	}
	return nil
}

func snapuserdKillAfterReboot(ctx context.Context, e *env) error {
	p, err := snapParamsFrom(cmdline())
	if err != nil {
		return err
	}
	if err := waitDisk(ctx, diskKillBase); err != nil {
		return err
	}
	if err := expectHash(diskKillBase, p.sha256, "base after reboot"); err != nil {
		return err
	}
	return checkMount(ctx, diskKillBase, "/mnt/base", p.token)
}
