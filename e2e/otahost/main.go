// Command otahost drives the multi-boot OTA scenarios of the VM (e2e/ota.sh
// builds its inputs): each scenario boots qemu several times over the same
// four disks with cmd/vabc-init as /init and checks every boot's "VABC-…"
// console lines, then the disks themselves.
//
//	ota        boot 1 installs the payload (slot _a), boot 2 runs the new
//	           build from the snapshot, hands off and merges, boot 3 maps the
//	           base directly; the super disk then holds the new image.
//	power-cut  the merge is cut by SIGKILL of qemu (a hard power-off) at
//	           seeded random merge percentages, ≥ -cuts times; every next
//	           boot must resume; the final image must be exact.
//	rollback   the new build fails before marking the boot successful until
//	           its tries run out; the bootloader returns to _a, the update is
//	           cancelled and the super disk still holds the old image.
//
// Output: RESULT <scenario> PASS|FAIL <reason> and POWERCUT <seed> <percent>
// on stdout; timings on stderr.
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var (
	kernel    = flag.String("kernel", "", "vmlinux")
	initrd    = flag.String("initrd", "", "initramfs with vabc-init as /init")
	dir       = flag.String("dir", "", "work directory with the pristine disks super.img, metadata.img, userdata.img, misc.img")
	oldSHA    = flag.String("old-sha", "", "sha256 of the old system image")
	newSHA    = flag.String("new-sha", "", "sha256 of the new system image")
	sysBytes  = flag.Int64("system-bytes", 0, "size of the system images")
	seed      = flag.Uint64("seed", 0, "power-cut seed (0: from the clock)")
	cuts      = flag.Int("cuts", 5, "power cuts during merges")
	timeout   = flag.Duration("boot-timeout", 150*time.Second, "limit of one boot")
	memory    = flag.String("m", "512M", "VM memory")
	scenarios = flag.String("scenarios", "ota,power-cut,rollback", "comma-separated scenarios")
	poll      = flag.Duration("poll", 50*time.Millisecond, "guest merge poll interval (vabc.poll): the power-cut granularity")
)

// kernelBad matches kernel reports that fail a boot.
var kernelBad = regexp.MustCompile(`(^|[^A-Za-z_])(Oops|BUG|WARNING)([^A-Za-z_]|$)`)

var disks = []string{"super.img", "metadata.img", "userdata.img", "misc.img"}

func main() {
	flag.Parse()
	if *seed == 0 {
		*seed = uint64(time.Now().UnixNano()) % 1_000_000
	}
	fail := false
	for _, s := range strings.Split(*scenarios, ",") {
		t0 := time.Now()
		var err error
		switch s {
		case "ota":
			err = scenarioOTA()
		case "power-cut":
			err = scenarioPowerCut()
		case "rollback":
			err = scenarioRollback()
		default:
			err = fmt.Errorf("unknown scenario")
		}
		fmt.Fprintf(os.Stderr, "vm-test: %s took %.1fs\n", s, time.Since(t0).Seconds())
		if err != nil {
			fmt.Printf("RESULT %s FAIL %s\n", s, strings.Join(strings.Fields(err.Error()), " "))
			fail = true
		} else {
			fmt.Printf("RESULT %s PASS\n", s)
		}
	}
	if fail {
		os.Exit(1)
	}
}

// vm is one scenario's disk set.
type vm struct {
	name  string
	dir   string
	boots int
	// cutDelay: a power cut lands this long after kill said so (a random
	// moment inside the merge window the guest just reported).
	cutDelay time.Duration
}

// newVM copies the disks of from (a directory) into a fresh scenario dir.
func newVM(name, from string) (*vm, error) {
	d := filepath.Join(*dir, name)
	os.RemoveAll(d)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return nil, err
	}
	for _, f := range disks {
		if err := copyFile(filepath.Join(from, f), filepath.Join(d, f)); err != nil {
			return nil, err
		}
	}
	return &vm{name: name, dir: d}, nil
}

// installedDir holds the disks right after the install boot, shared by
// every scenario (one install boot per run instead of one per scenario).
var installedDir string

// fromInstalled returns a VM whose disks have the update installed.
func fromInstalled(name string) (*vm, error) {
	if installedDir == "" {
		v, err := newVM("install", *dir)
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := v.install(fmt.Sprintf("vabc.tries=%d", rollbackTries)); err != nil {
			return nil, fmt.Errorf("install boot: %w", err)
		}
		fmt.Fprintf(os.Stderr, "vm-test: install (shared by the scenarios) took %.1fs\n", time.Since(t0).Seconds())
		installedDir = v.dir
	}
	v, err := newVM(name, installedDir)
	if v != nil {
		v.boots = 1 // the install boot
	}
	return v, err
}

// cutSpan is the merge percentage range the power cuts are spread over.
const cutSpan = 85.0

// rollbackTries is what setActiveBootSlot gives the new slot.
const rollbackTries = 2

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// bootLog is one boot's console.
type bootLog struct {
	lines  []string
	killed bool
	path   string
}

// find returns the first line with the prefix, or "".
func (b *bootLog) find(prefix string) string {
	for _, l := range b.lines {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

func (b *bootLog) all(prefix string) []string {
	var out []string
	for _, l := range b.lines {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// field returns key=value from a line.
func field(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// boot runs qemu once. kill, when set, sees every console line and returns
// true to SIGKILL qemu at once (a power cut).
func (v *vm) boot(extra string, kill func(string) bool) (*bootLog, error) {
	v.boots++
	log := filepath.Join(v.dir, fmt.Sprintf("console-%d.log", v.boots))
	args := []string{"-accel", "tcg", "-cpu", "max", "-m", *memory, "-smp", "1", "-nodefaults", "-display", "none",
		"-serial", "stdio", "-no-reboot", "-kernel", *kernel, "-initrd", *initrd,
		"-append", fmt.Sprintf("console=ttyS0 panic=-1 quiet no_timer_check vabc.poll=%d %s %s", poll.Milliseconds(), os.Getenv("VABC_OTA_APPEND"), extra)}
	for _, d := range disks {
		// cache=none: O_DIRECT on the host, so a SIGKILL loses exactly
		// what the guest had not flushed (no host page cache hides it).
		args = append(args, "-drive", "file="+filepath.Join(v.dir, d)+",if=virtio,format=raw,cache=none")
	}
	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.Stdin = nil
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	f, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	timer := time.AfterFunc(*timeout, func() { cmd.Process.Kill() })
	defer timer.Stop()
	b := &bootLog{path: log}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		fmt.Fprintln(f, line)
		if strings.HasPrefix(line, "VABC-") {
			b.lines = append(b.lines, line)
			if kill != nil && !b.killed && kill(line) {
				b.killed = true
				if v.cutDelay > 0 {
					time.AfterFunc(v.cutDelay, func() { cmd.Process.Signal(syscall.SIGKILL) })
				} else {
					cmd.Process.Signal(syscall.SIGKILL)
				}
			}
			if kill != nil && b.killed {
				kill(line) // keeps seeing progress until the cut lands
			}
		}
	}
	err = cmd.Wait()
	fmt.Fprintf(os.Stderr, "vm-test: %s boot %d (%s) %.1fs%s\n", v.name, v.boots, strings.TrimSpace(extra), time.Since(t0).Seconds(),
		map[bool]string{true: " [power cut]", false: ""}[b.killed])
	if !b.killed && b.find("VABC-DONE") == "" {
		return b, fmt.Errorf("boot %d did not finish (%v; see %s)", v.boots, err, log)
	}
	for _, l := range b.all("VABC-KMSG") {
		if kernelBad.MatchString(l) {
			return b, fmt.Errorf("boot %d: kernel reported: %s (see %s)", v.boots, l, log)
		}
	}
	if l := b.find("VABC-ERROR"); l != "" && !strings.Contains(extra, "badbuild") {
		return b, fmt.Errorf("boot %d: %s (see %s)", v.boots, l, log)
	}
	return b, nil
}

// expect checks a line's fields.
func expect(b *bootLog, prefix string, kv ...string) error {
	l := b.find(prefix)
	if l == "" {
		return fmt.Errorf("no %s line (see %s)", prefix, b.path)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if got := field(l, kv[i]); got != kv[i+1] {
			return fmt.Errorf("%s %s=%q, want %q (see %s)", prefix, kv[i], got, kv[i+1], b.path)
		}
	}
	return nil
}

// systems returns the sha256 of every VABC-SYSTEM line.
func systems(b *bootLog) []string {
	var out []string
	for _, l := range b.all("VABC-SYSTEM") {
		out = append(out, field(l, "sha256"))
	}
	return out
}

func expectSystems(b *bootLog, want ...string) error {
	got := systems(b)
	if len(got) != len(want) {
		return fmt.Errorf("boot shows %d system reports, want %d (see %s)", len(got), len(want), b.path)
	}
	for i := range want {
		if got[i] != want[i] {
			return fmt.Errorf("system report %d: sha256 %.16s…, want %.16s… (see %s)", i+1, got[i], want[i], b.path)
		}
	}
	return nil
}

// clean checks that no update state is left. files lists the indicator
// files allowed to remain.
func clean(b *bootLog, files string) error {
	return expect(b, "VABC-STATE", "state", "None", "state_bytes", "0", "snapshots", "0", "files", files, "images", "0", "hal", "NONE")
}

// superSHA hashes the system partition on the super disk (host side).
func (v *vm) superSHA() (string, error) {
	f, err := os.Open(filepath.Join(v.dir, "super.img"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, *sysBytes); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (v *vm) expectSuper(want, what string) error {
	got, err := v.superSHA()
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("super disk holds sha256 %.16s… after %s, want %.16s…", got, what, want)
	}
	return nil
}

// install is boot 1: the old system applies the payload. The HAL then
// holds SNAPSHOTTED recorded on _a, which reads as NONE on _a itself.
func (v *vm) install(extra string) error {
	b, err := v.boot("vabc.apply=1 "+extra, nil)
	if err != nil {
		return err
	}
	if err := expect(b, "VABC-BOOT", "slot", "_a", "class", "Unknown", "snapshots", "0"); err != nil {
		return err
	}
	if err := expectSystems(b, *oldSHA); err != nil {
		return err
	}
	if err := expect(b, "VABC-APPLIED", "target", "_b"); err != nil {
		return err
	}
	return expect(b, "VABC-STATE", "state", "Unverified", "snapshots", "1", "images", "1", "hal", "NONE")
}

// verify is the boot after the merge: the base mapped directly.
func (v *vm) verify() error {
	b, err := v.boot("", nil)
	if err != nil {
		return err
	}
	if err := expect(b, "VABC-BOOT", "slot", "_b", "snapshots", "0", "state", "None"); err != nil {
		return err
	}
	if err := expectSystems(b, *newSHA); err != nil {
		return err
	}
	if err := clean(b, ""); err != nil {
		return err
	}
	return v.expectSuper(*newSHA, "the merge")
}

func scenarioOTA() error {
	v, err := fromInstalled("ota")
	if err != nil {
		return err
	}
	b, err := v.boot("", nil)
	if err != nil {
		return err
	}
	if err := expect(b, "VABC-BOOT", "slot", "_b", "class", "Target", "snapshots", "1", "state", "Unverified"); err != nil {
		return err
	}
	// Reads running through the table reloads and the daemon switch.
	if err := expect(b, "VABC-LIVEIO", "errors", "0", "sha256", *newSHA); err != nil {
		return err
	}
	for _, p := range []string{"VABC-TRANSITION", "VABC-HANDOFF", "VABC-MERGED"} {
		if b.find(p) == "" {
			return fmt.Errorf("boot 2: no %s line (see %s)", p, b.path)
		}
	}
	// From the snapshot, then from the collapsed dm-linear.
	if err := expectSystems(b, *newSHA, *newSHA); err != nil {
		return err
	}
	if err := clean(b, ""); err != nil {
		return err
	}
	return v.verify()
}

func scenarioPowerCut() error {
	rng := rand.New(rand.NewPCG(*seed, 0x5eed))
	done := 0
	// A cycle ends when a merge finishes before the next cut lands (progress comes in
	// ~5 steps on these images, so a late target can miss): install again, up to
	// cuts+2 installs in all.
	for cycle := 0; done < *cuts && cycle < *cuts+2; cycle++ {
		v, err := fromInstalled(fmt.Sprintf("power-cut-%d", cycle))
		if err != nil {
			return err
		}
		expectState := "Unverified"
		for seg := 0; ; seg++ {
			if seg > *cuts+4 {
				return errors.New("merge never finished")
			}
			left := *cuts - done
			target := 100.0
			if left > 0 {
				// Spread the remaining cuts over the first cutSpan percent
				// of the merge (the daemon reports progress per window; the
				// last report before completion is often ≥ 80, so targets
				// above that would often miss and cost another install).
				lo := float64(seg) * cutSpan / float64(seg+left)
				hi := float64(seg+1) * cutSpan / float64(seg+left)
				target = lo + rng.Float64()*(hi-lo)
			}
			last := -1.0
			v.cutDelay = time.Duration(rng.IntN(250)) * time.Millisecond
			// Progress moves per commit: the Replace phase commits every
			// 8 MiB, so on these small images the percentage sits at one
			// value for most of the merge. A cut also lands after a random
			// number (1…3) of unchanged reports (a resumed merge makes
			// 4–6), i.e. at a random time in such a stretch, and never on
			// the 0% reports before the first commit.
			stuck, same := 1+rng.IntN(3), 0
			b, err := v.boot("", func(l string) bool {
				if p, ok := strings.CutPrefix(l, "VABC-MERGE "); ok {
					if f, err := strconv.ParseFloat(strings.TrimSpace(p), 64); err == nil {
						if f == last {
							same++
						} else {
							same = 0
						}
						last = f
						return left > 0 && f < 100 && (f >= target || (f > 0 && same >= stuck))
					}
				}
				return false
			})
			if err != nil {
				return err
			}
			bl := b.find("VABC-BOOT")
			if field(bl, "slot") != "_b" || field(bl, "class") != "Target" {
				return fmt.Errorf("boot %d: %q, want the target slot (see %s)", v.boots, bl, b.path)
			}
			if st := field(bl, "state"); st != expectState && !(seg > 0 && st == "Merging") {
				return fmt.Errorf("boot %d: state %s at boot, want %s (see %s)", v.boots, st, expectState, b.path)
			}
			if field(bl, "snapshots") == "1" {
				// Whatever the merge did before the cut, the snapshot
				// device shows exactly the new build.
				if got := systems(b); len(got) == 0 || got[0] != *newSHA {
					return fmt.Errorf("boot %d: the snapshot does not show the new build: %v (see %s)", v.boots, got, b.path)
				}
			}
			if b.killed && b.find("VABC-DONE") != "" {
				// The delayed cut came after the boot had finished.
				b.killed = false
			}
			if b.killed {
				fmt.Printf("POWERCUT %d %.1f\n", *seed, last)
				done++
				expectState = "Merging"
				continue
			}
			// The merge finished in this boot.
			if b.find("VABC-MERGED") == "" {
				return fmt.Errorf("boot %d ended without the merge finishing (see %s)", v.boots, b.path)
			}
			if err := clean(b, ""); err != nil {
				return err
			}
			break
		}
		// The merged base, read on the host: exact.
		if err := v.expectSuper(*newSHA, "the interrupted merges"); err != nil {
			return err
		}
	}
	if done < *cuts {
		return fmt.Errorf("only %d of %d power cuts landed inside a merge", done, *cuts)
	}
	return nil
}

func scenarioRollback() error {
	v, err := fromInstalled("rollback")
	if err != nil {
		return err
	}
	for i := 0; i < rollbackTries; i++ {
		b, err := v.boot("vabc.badbuild=1", nil)
		if err != nil {
			return err
		}
		if err := expect(b, "VABC-BOOT", "slot", "_b", "class", "Target", "snapshots", "1"); err != nil {
			return err
		}
		if !strings.Contains(b.find("VABC-ERROR"), "bad build") {
			return fmt.Errorf("boot %d: the bad build did not fail (see %s)", v.boots, b.path)
		}
		if b.find("VABC-MERGE") != "" {
			return fmt.Errorf("boot %d: a merge started on an unverified build", v.boots)
		}
	}
	b, err := v.boot("vabc.badbuild=1", nil)
	if err != nil {
		return err
	}
	if err := expect(b, "VABC-BOOT", "slot", "_a", "class", "Source", "snapshots", "0", "state", "Unverified"); err != nil {
		return err
	}
	if b.find("VABC-CANCELLED") == "" {
		return fmt.Errorf("rollback boot: update not cancelled (see %s)", b.path)
	}
	if err := expectSystems(b, *oldSHA); err != nil {
		return err
	}
	// As in AOSP, the daemon-alive indicator written by the failed boots'
	// daemon stays: only first stage (before launching a daemon) and
	// AcknowledgeMergeSuccess remove it; RemoveAllUpdateState does not.
	if err := clean(b, "daemon-alive-indicator"); err != nil {
		return err
	}
	return v.expectSuper(*oldSHA, "the rollback")
}
