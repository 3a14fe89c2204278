// Command vabc-init is the PID-1 program of the OTA VM (e2e/ota.sh): a
// bootloader, first-stage init, the SELinux-style daemon transition, the
// second-stage socket hand-off, update_verifier and update_engine's
// after-boot merge, in one binary, on the VM profile of
// snapshot-lifecycle.md §7:
//
//	/dev/vda  "super": the partitions at the sectors of the profile table
//	/dev/vdb  "metadata": ext4 at /metadata (libsnapshot's /metadata/ota;
//	          the profile partition table in /metadata/vabc/partitions)
//	/dev/vdc  "userdata": ext4 at /data (COW images in /data/gsi/ota)
//	/dev/vdd  "misc": slot records and the Virtual A/B merge status
//
// Kernel command line: vabc.apply=1 installs /ota/payload.bin (the "old
// system" runs payload apply-cow --snapshot-state, then switches slots);
// vabc.badbuild=1 makes a build booted from snapshots fail before it marks
// the boot successful; vabc.tries=N (setActiveBootSlot tries, default 6);
// vabc.poll=MS merge poll interval (default 200); vabc.hybrid=1 (or the
// environment variable VABC_HYBRID_TABLE=1) maps snapshots with the hybrid
// table (init/stack/hybrid.go) instead of AOSP's single dm-user target.
// Results go to the console
// as "VABC-…" lines read by the host driver (e2e/otahost).
//
// Android properties are stood in for by files in /dev/__properties__
// (snapuserd.proxy_ready, snapuserd.ready: "true"), written by this init:
// proxy_ready once snapuserd_proxy's socket accepts, ready once the
// handed-off control socket answers query.
//
// Deviations from AOSP, all forced by the VM profile: first stage mounts
// /data (the COW images are loop-attached files, not libfiemap extents); the
// install reports SNAPSHOTTED to boot control after apply-cow wrote the
// Unverified state (AOSP reports it just before that write); waits for
// daemons and device nodes are 90 s instead of 10 s (TCG on a shared host).
//
// Run as anything but PID 1 it refuses to start.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/init/bootctl"
	"github.com/vabc-go/vabc/init/firststage"
	"github.com/vabc-go/vabc/init/merge"
	"github.com/vabc-go/vabc/init/stack"
	"github.com/vabc-go/vabc/init/state"
	"github.com/vabc-go/vabc/kernel/dm"
	"github.com/vabc-go/vabc/snapuserd/client"
)

const (
	diskSuper    = "/dev/vda"
	diskMetadata = "/dev/vdb"
	diskUserdata = "/dev/vdc"
	diskMisc     = "/dev/vdd"
	tablePath    = "/metadata/vabc/partitions"
	imageDir     = "/data/gsi/ota"
	payloadPath  = "/ota/payload.bin"
	socketPath   = "/dev/socket/snapuserd"
	propDir      = "/dev/__properties__"
	snapuserdBin = "/bin/snapuserd"
	payloadBin   = "/bin/payload"
	// waitLimit replaces AOSP's 10 s waits for daemons and device nodes:
	// TCG on a host shared with other jobs starts a Go binary in seconds.
	waitLimit = 90 * time.Second
)

const usage = `usage: vabc-init   (as PID 1 of the OTA VM only)

The PID-1 program of the OTA VM (e2e/ota.sh): bootloader, first-stage init,
the daemon transition and socket hand-off, update_verifier and the after-boot
merge. It takes no arguments: it reads the kernel command line.

kernel command line:
  vabc.apply=1      install /ota/payload.bin (payload apply-cow --snapshot-state), switch slots
  vabc.badbuild=1   a build booted from snapshots fails before marking the boot successful
  vabc.tries=N      boot tries of the new slot (default 6)
  vabc.poll=MS      merge poll interval (default 200)
  vabc.hybrid=1     hybrid snapshot tables: unchanged and copied blocks by dm-linear, the rest by
                    dm-user (also VABC_HYBRID_TABLE=1 in the environment); off by default

examples:
  vabc-init                                  # as /init in the initramfs built by e2e/ota.sh
  qemu-system-x86_64 ... -append 'rdinit=/init vabc.apply=1'   # boot 1: install the OTA
`

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "--help" || os.Args[1] == "-help" || os.Args[1] == "-h") {
		fmt.Print(usage)
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprint(os.Stderr, "vabc-init: this is the OTA VM's /init; it only runs as PID 1\n\n", usage)
		os.Exit(2)
	}
	err := run()
	if err != nil {
		say("VABC-ERROR %s", strings.Join(strings.Fields(err.Error()), " "))
	}
	say("VABC-DONE")
	powerOff()
}

func say(format string, args ...any) { fmt.Printf(format+"\n", args...) }

func powerOff() {
	unix.Sync()
	for _, m := range []string{"/system", "/data", "/metadata"} {
		unix.Unmount(m, 0)
	}
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

type opts struct {
	apply, badBuild bool
	hybrid          bool
	tries           int
	poll            time.Duration
}

func parseCmdline(s string) opts {
	o := opts{tries: 6, poll: 200 * time.Millisecond}
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "vabc.apply":
			o.apply = v == "1"
		case "vabc.badbuild":
			o.badBuild = v == "1"
		case "vabc.hybrid":
			o.hybrid = v == "1"
		case "vabc.tries":
			if n, err := strconv.Atoi(v); err == nil && n > 0 && n <= 7 {
				o.tries = n
			}
		case "vabc.poll":
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				o.poll = time.Duration(n) * time.Millisecond
			}
		}
	}
	return o
}

func run() error {
	t0 := time.Now()
	if err := setup(); err != nil {
		return err
	}
	go streamKernelLog()
	cmdline, _ := os.ReadFile("/proc/cmdline")
	o := parseCmdline(string(cmdline))
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx := context.Background()

	// Bootloader: pick the slot, spend a try.
	misc, err := bootctl.Open(diskMisc)
	if err != nil {
		return err
	}
	misc.Tries = uint8(o.tries)
	slot, err := misc.Boot()
	if err != nil {
		return err
	}
	suffix := bootctl.Suffix(slot)

	// First stage: /metadata (and /data, which holds the COW images).
	if err := mountRW(diskMetadata, "/metadata"); err != nil {
		return err
	}
	if err := mountRW(diskUserdata, "/data"); err != nil {
		return err
	}
	tb, err := os.ReadFile(tablePath)
	if err != nil {
		return err
	}
	table, err := stack.ParseTable(string(tb))
	if err != nil {
		return err
	}
	d := state.Dir{Path: state.DefaultDir}
	if err := d.Ensure(); err != nil {
		return err
	}
	c, err := dm.Open()
	if err != nil {
		return err
	}
	defer c.Close()
	b := &stack.Builder{C: c, Log: log, Timeout: waitLimit, Hybrid: o.hybrid || os.Getenv("VABC_HYBRID_TABLE") == "1"}
	fcfg := &firststage.Config{Dir: d, Suffix: suffix, Table: table, ImageDir: imageDir, B: b, Snapuserd: snapuserdBin,
		Socket: socketPath, Log: log, DaemonOut: os.Stdout, Timeout: waitLimit}
	res, err := firststage.Mount(ctx, fcfg)
	if err != nil {
		return fmt.Errorf("first stage: %w", err)
	}
	st, _ := d.ReadUpdateStatus()
	say("VABC-BOOT slot=%s class=%v snapshots=%d state=%v t=%.1fs", suffix, res.Class, len(res.Snapshots), st.State, time.Since(t0).Seconds())

	sys := stack.MapperPath("system" + suffix)
	var second *exec.Cmd
	if len(res.Snapshots) > 0 {
		tt := time.Now()
		live := liveReads(sys)
		if second, err = firststage.Transition(ctx, fcfg, res, sys); err != nil {
			return err
		}
		say("VABC-TRANSITION daemon=%d secs=%.2f", second.Process.Pid, time.Since(tt).Seconds())
		say("VABC-LIVEIO %s", live())
		go second.Wait()
	}

	// The "system": mount it, report what it holds.
	if err := report(sys); err != nil {
		return err
	}

	sock := ""
	if second != nil {
		// Second stage: snapuserd_proxy hands the control socket over.
		if err := handoff(ctx); err != nil {
			return err
		}
		sock = socketPath
		say("VABC-HANDOFF ok")
	}

	if res.Class == firststage.Target && len(res.Snapshots) > 0 && o.badBuild {
		return errors.New("bad build: the new slot failed before marking the boot successful (vabc.badbuild=1)")
	}
	// update_verifier: ask snapuserd to verify, then mark the boot successful.
	if ok, _ := misc.IsSuccessful(slot); !ok {
		if sock != "" {
			cl, err := client.Connect(ctx, sock, waitLimit)
			if err != nil {
				return err
			}
			ok, err := cl.QueryUpdateVerification()
			cl.Close()
			if err != nil || !ok {
				return fmt.Errorf("update-verify: %v %v", ok, err)
			}
		}
		if err := misc.MarkSuccessful(slot); err != nil {
			return err
		}
	}

	mcfg := &merge.Config{Dir: d, Suffix: suffix, Table: table, ImageDir: imageDir, B: b, Socket: sock, Misc: misc, Poll: o.poll, Log: log,
		Progress: func(p float64) { say("VABC-MERGE %.1f", p) }}
	tm := time.Now()
	final, err := merge.Run(ctx, mcfg)
	if err != nil {
		return err
	}
	if final == state.MergeCompleted {
		say("VABC-MERGED secs=%.2f", time.Since(tm).Seconds())
		if err := report(sys); err != nil {
			return err
		}
	}
	if final == state.Cancelled {
		say("VABC-CANCELLED")
	}

	if o.apply {
		if final != state.None && final != state.MergeCompleted && final != state.Cancelled {
			return fmt.Errorf("apply: an update is pending (state %v)", final)
		}
		if err := apply(ctx, misc, slot, suffix); err != nil {
			return err
		}
	}
	return finalState(d, misc, slot)
}

// liveReads hashes dev over and over from now until the returned function
// is called (then the pass in flight finishes): I/O across the transition's
// table reloads and daemon switch. The report gives the passes, their
// common hash (or "differ") and the read errors.
func liveReads(dev string) func() string {
	stop := make(chan struct{})
	done := make(chan string, 1)
	go func() {
		passes, errs, sum := 0, 0, ""
		for {
			h, _, err := hashDevice(dev)
			switch {
			case err != nil:
				errs++
			case sum == "" || sum == h:
				sum = h
			default:
				sum = "differ"
			}
			passes++
			select {
			case <-stop:
				done <- fmt.Sprintf("passes=%d errors=%d sha256=%s", passes, errs, sum)
				return
			default:
			}
		}
	}()
	return func() string { close(stop); return <-done }
}

// report hashes the system partition and reads its version file.
func report(dev string) error {
	sum, size, err := hashDevice(dev)
	if err != nil {
		return err
	}
	os.MkdirAll("/system", 0o755)
	unix.Unmount("/system", 0)
	if err := unix.Mount(dev, "/system", "ext4", unix.MS_RDONLY, "noload"); err != nil {
		return fmt.Errorf("mount %s on /system: %w", dev, err)
	}
	ver, err := os.ReadFile("/system/etc/version")
	if err != nil {
		return err
	}
	var tables []string
	if ts, err := exec.Command("/sbin/dmsetup", "table").Output(); err == nil {
		tables = strings.Split(strings.TrimSpace(string(ts)), "\n")
	}
	say("VABC-SYSTEM dev=%s sha256=%s bytes=%d version=%s", dev, sum, size, strings.TrimSpace(string(ver)))
	for _, t := range tables {
		say("VABC-TABLE %s", t)
	}
	return nil
}

// handoff starts snapuserd_proxy (snapuserd -socket_handoff), sets the
// property stand-ins and waits until the running daemon serves the socket.
func handoff(ctx context.Context) error {
	os.MkdirAll(propDir, 0o755)
	proxy := exec.Command(snapuserdBin, "-socket_handoff")
	proxy.Stdout, proxy.Stderr = os.Stdout, os.Stdout
	if err := proxy.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- proxy.Wait() }()
	if err := stack.WaitPath(ctx, socketPath+"_proxy", waitLimit); err != nil {
		return err
	}
	os.WriteFile(filepath.Join(propDir, "snapuserd.proxy_ready"), []byte("true"), 0o644)
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("snapuserd_proxy: %w", err)
		}
	case <-time.After(waitLimit):
		proxy.Process.Kill()
		return fmt.Errorf("snapuserd_proxy did not finish the hand-off in %s", waitLimit)
	}
	cl, err := client.Connect(ctx, socketPath, waitLimit)
	if err != nil {
		return fmt.Errorf("handed-off control socket: %w", err)
	}
	cl.Close()
	return os.WriteFile(filepath.Join(propDir, "snapuserd.ready"), []byte("true"), 0o644)
}

// apply is the on-device install: payload apply-cow --snapshot-state
// against the running source partition, then boot control.
func apply(ctx context.Context, misc *bootctl.Misc, slot int, suffix string) error {
	target := 1 - slot
	old := "/tmp/old"
	os.MkdirAll(old, 0o755)
	if err := os.Symlink(stack.MapperPath("system"+suffix), filepath.Join(old, "system.img")); err != nil {
		return err
	}
	if err := os.MkdirAll(imageDir, 0o755); err != nil {
		return err
	}
	t := time.Now()
	cmd := exec.CommandContext(ctx, payloadBin, "apply-cow", "--old", old, "-o", imageDir, "--snapshot-state", state.DefaultDir,
		"--target-slot", bootctl.Suffix(target), "--source-slot", suffix, "--threads", "1", payloadPath)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("payload apply-cow: %w", err)
	}
	if err := misc.SetMergeStatus(slot, bootctl.MergeSnapshotted); err != nil {
		return err
	}
	if err := misc.SetActive(target); err != nil {
		return err
	}
	say("VABC-APPLIED target=%s secs=%.2f", bootctl.Suffix(target), time.Since(t).Seconds())
	return nil
}

// finalState prints what is left of the update.
func finalState(d state.Dir, misc *bootctl.Misc, slot int) error {
	st, err := d.ReadUpdateStatus()
	if err != nil {
		return err
	}
	raw, _ := os.ReadFile(filepath.Join(d.Path, state.StateFile))
	snaps, _ := d.ListSnapshots()
	var files []string
	for _, n := range []string{state.SnapshotBoot, state.RollbackIndicator, state.AllowForwardMerge, state.SnapuserdFromSystem, state.DaemonAliveIndicator} {
		if d.Exists(n) {
			files = append(files, n)
		}
	}
	imgs, _ := filepath.Glob(filepath.Join(imageDir, "*"))
	ms, _ := misc.GetMergeStatus(slot)
	devs, _ := exec.Command("/sbin/dmsetup", "ls").Output()
	say("VABC-STATE state=%v state_bytes=%d snapshots=%d files=%s images=%d hal=%v devices=%s", st.State, len(raw), len(snaps),
		strings.Join(files, ","), len(imgs), ms, strings.Join(strings.Fields(string(devs)), ","))
	return nil
}

func hashDevice(path string) (string, int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	buf, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return "", 0, err
	}
	defer unix.Munmap(buf)
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
			return "", off, fmt.Errorf("read %s at %d: %w", path, off, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), off, nil
}

func mountRW(dev, dir string) error {
	os.MkdirAll(dir, 0o755)
	if err := unix.Mount(dev, dir, "ext4", 0, ""); err != nil {
		return fmt.Errorf("mount %s on %s: %w", dev, dir, err)
	}
	return nil
}

func setup() error {
	os.Setenv("PATH", "/bin:/sbin")
	for _, m := range [][3]string{{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/tmp", "tmpfs"}, {"tmpfs", "/run", "tmpfs"}} {
		os.MkdirAll(m[1], 0o755)
		if err := unix.Mount(m[0], m[1], m[2], 0, ""); err != nil && err != unix.EBUSY {
			return fmt.Errorf("mount %s: %w", m[1], err)
		}
	}
	os.MkdirAll("/dev/socket", 0o755)
	if out, err := exec.Command("/bin/busybox", "--install", "-s", "/bin").CombinedOutput(); err != nil {
		say("VABC: busybox --install: %v: %s", err, out)
	}
	kver := strings.TrimSpace(readFile("/proc/sys/kernel/osrelease"))
	mods := []string{"virtio_pci", "virtio_blk", "dm-mod", "loop", "ext4"}
	if out, err := exec.Command("/sbin/modprobe", append([]string{"-a"}, mods...)...).CombinedOutput(); err != nil {
		return fmt.Errorf("modprobe %v: %v: %s", mods, err, out)
	}
	if out, err := exec.Command("/sbin/insmod", "/lib/modules/"+kver+"/extra/dm-user.ko").CombinedOutput(); err != nil {
		return fmt.Errorf("insmod dm-user: %v: %s", err, out)
	}
	for _, d := range []string{diskSuper, diskMetadata, diskUserdata, diskMisc} {
		if err := stack.WaitPath(context.Background(), d, 10*time.Second); err != nil {
			return err
		}
	}
	return nil
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// streamKernelLog copies kernel messages of level warning or worse to the
// console as "VABC-KMSG <level> <text>" ("quiet" hides KERN_WARNING), so the
// host sees Oops, BUG and WARNING reports.
func streamKernelLog() {
	f, err := os.Open("/dev/kmsg")
	if err != nil {
		return
	}
	r := bufio.NewReaderSize(f, 16<<10)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if errors.Is(err, unix.EPIPE) {
				continue // overwritten records
			}
			return
		}
		prefix, msg, ok := strings.Cut(line, ";")
		if !ok {
			continue
		}
		var level int
		fmt.Sscanf(prefix, "%d", &level)
		if level&7 <= 4 {
			say("VABC-KMSG %d %s", level&7, strings.TrimSpace(msg))
		}
	}
}
