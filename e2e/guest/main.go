// Command guest is the /init of the vabc VM test initramfs (see e2e/run.sh and
// vm-harness.md §5). It mounts the pseudo filesystems, loads the kernel modules, runs the
// scenarios named on the kernel command line (vabc.run=a,b or all), prints one
// machine-readable line per scenario on the serial console and powers the VM off.
//
//	VMTEST-RESULT: <scenario> PASS <seconds>
//	VMTEST-RESULT: <scenario> FAIL <seconds> <reason>
//	VMTEST-RESULT: <scenario> SKIP 0 <reason>
//	VMTEST-REBOOT: <scenario>      (passed; its after-reboot check runs in a second boot)
//	VMTEST-DONE
//
// The same binary is multi-call: "passthrough-daemon" runs the dm-user test daemon as a
// separate process, so scenarios can SIGKILL it (as "dm-suspend NAME" does a suspend);
// "list-scenarios" (on the host) prints the
// registered scenario names, one per line.
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "passthrough-daemon" {
		os.Exit(daemonMain(os.Args[2:]))
	}
	if len(os.Args) > 2 && os.Args[1] == "dm-suspend" {
		// A suspend in a process of its own, so that a scenario can SIGKILL it.
		os.Exit(dmSuspendMain(os.Args[2]))
	}
	if len(os.Args) > 1 && os.Args[1] == "list-scenarios" {
		// For e2e/run.sh on the host: the scenarios a run without names asks for.
		for _, s := range scenarios {
			fmt.Println(s.name)
		}
		return
	}
	if os.Getpid() != 1 {
		// Outside the VM: refuse to mount and power off the host.
		fmt.Fprintln(os.Stderr, "guest: this is the VM test /init; it only runs as PID 1 inside the test VM")
		os.Exit(2)
	}
	start := time.Now()
	os.MkdirAll("/proc", 0o755)
	unix.Mount("proc", "/proc", "proc", 0, "")
	logf("init start, uptime %s", uptime())
	if err := setup(); err != nil {
		logf("setup failed: %v", err)
	}
	go streamKernelLog()

	want := selected(cmdline())
	repeat := repeatCount(cmdline())
	afterReboot := bootNumber(cmdline()) > 1
	for _, s := range scenarios {
		if !want(s.name) {
			continue
		}
		if afterReboot {
			// Second boot (same disks): only the after-reboot checks of the scenarios
			// whose first half passed, which e2e/run.sh names in vabc.run=.
			if s.afterReboot == nil {
				continue
			}
			t0 := time.Now()
			err := runPhase(s, s.afterReboot)
			d := time.Since(t0).Seconds()
			if err != nil {
				result(s.name, "FAIL", d, "after reboot: "+err.Error())
			} else {
				result(s.name, "PASS", d, "")
			}
			continue
		}
		if s.run == nil {
			result(s.name, "SKIP", 0, s.missing)
			continue
		}
		// vabc.repeat=N runs each scenario N times (flake and race hunting); the first
		// failure is the result.
		t0 := time.Now()
		var err error
		for i := 0; i < repeat && err == nil; i++ {
			if err = runScenario(s); err != nil && repeat > 1 {
				err = fmt.Errorf("run %d of %d: %w", i+1, repeat, err)
			}
		}
		d := time.Since(t0).Seconds()
		if err != nil {
			result(s.name, "FAIL", d, err.Error())
		} else {
			result(s.name, "PASS", d, "")
			if s.afterReboot != nil {
				// The verdict is final only after the second boot's check.
				fmt.Printf("VMTEST-REBOOT: %s\n", s.name)
			}
		}
	}
	logf("scenarios took %.2fs, uptime %s", time.Since(start).Seconds(), uptime())
	time.Sleep(200 * time.Millisecond) // let the kernel-log streamer catch up
	fmt.Println("VMTEST-DONE")
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

func runScenario(s scenario) error { return runPhase(s, s.run) }

// runPhase runs one scenario function bounded by the scenario's limit.
func runPhase(s scenario, run func(context.Context, *env) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, &env{name: s.name}) }()
	select {
	case err := <-done:
		return err
	case <-time.After(s.timeout() + 5*time.Second):
		return fmt.Errorf("scenario hung for %s", s.timeout()+5*time.Second)
	}
}

func result(name, verdict string, secs float64, reason string) {
	reason = strings.Join(strings.Fields(reason), " ")
	if reason == "" {
		fmt.Printf("VMTEST-RESULT: %s %s %.2f\n", name, verdict, secs)
		return
	}
	fmt.Printf("VMTEST-RESULT: %s %s %.2f %s\n", name, verdict, secs, reason)
}

func logf(format string, args ...any) {
	fmt.Printf("VMTEST: "+format+"\n", args...)
}

func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0] + "s"
}

func cmdline() string {
	b, _ := os.ReadFile("/proc/cmdline")
	return string(b)
}

// repeatCount returns vabc.repeat=N (default 1).
func repeatCount(cmdline string) int {
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, "vabc.repeat="); ok {
			var n int
			if _, err := fmt.Sscanf(v, "%d", &n); err == nil && n > 0 {
				return n
			}
		}
	}
	return 1
}

// bootNumber returns vabc.boot=N (default 1): 2 is the after-reboot boot.
func bootNumber(cmdline string) int {
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, "vabc.boot="); ok {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				return n
			}
		}
	}
	return 1
}

// selected returns the filter given by vabc.run= (comma-separated names, default all).
func selected(cmdline string) func(string) bool {
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, "vabc.run="); ok && v != "all" && v != "" {
			set := map[string]bool{}
			for _, n := range strings.Split(v, ",") {
				set[n] = true
			}
			return func(n string) bool { return set[n] }
		}
	}
	return func(string) bool { return true }
}

type mountSpec struct{ src, dst, fstype string }

func setup() error {
	os.Setenv("PATH", "/bin:/sbin")
	for _, m := range []mountSpec{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/tmp", "tmpfs"},
		{"tmpfs", "/run", "tmpfs"},
	} {
		os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fstype, 0, ""); err != nil && err != unix.EBUSY {
			logf("mount -t %s %s %s: %v", m.fstype, m.src, m.dst, err)
		}
	}
	if out, err := exec.Command("/bin/busybox", "--install", "-s", "/bin").CombinedOutput(); err != nil {
		logf("busybox --install: %v: %s", err, out)
	}
	logf("kernel %s", strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")))
	// e2e/run.sh boots with oops=panic and a 15 s hung-task timeout; show they took.
	logf("panic_on_oops=%s hung_task_timeout_secs=%s", strings.TrimSpace(readFile("/proc/sys/kernel/panic_on_oops")),
		strings.TrimSpace(readFile("/proc/sys/kernel/hung_task_timeout_secs")))
	mods := []string{"virtio_pci", "virtio_blk", "dm-mod", "dm-snapshot", "dm-zero", "loop", "ext4"}
	out, err := exec.Command("/sbin/modprobe", append([]string{"-a"}, mods...)...).CombinedOutput()
	if err != nil {
		logf("modprobe %v: %v: %s", mods, err, out)
	}
	ko := "/lib/modules/" + strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")) + "/extra/dm-user.ko"
	if out, err := exec.Command("/sbin/insmod", ko).CombinedOutput(); err != nil {
		logf("insmod %s: %v: %s", ko, err, out)
	} else {
		logf("loaded %s", ko)
	}
	// Give virtio a moment to probe the disks.
	for i := 0; i < 100; i++ {
		if _, err := os.Stat("/dev/vdb"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// streamKernelLog copies kernel messages of level warning or worse to the console with a
// "KMSG:" prefix, so the host sees Oops/BUG/WARNING reports even with "quiet" (which hides
// KERN_WARNING). Info-level dm messages are shown too, for debugging.
func streamKernelLog() {
	f, err := os.Open("/dev/kmsg")
	if err != nil {
		logf("open /dev/kmsg: %v", err)
		return
	}
	r := bufio.NewReaderSize(f, 16<<10)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if err == unix.EPIPE || strings.Contains(err.Error(), "broken pipe") {
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
		level &= 7
		if level <= 4 || strings.Contains(msg, "device-mapper") || strings.Contains(msg, "dm-user") ||
			strings.Contains(msg, "user:") {
			fmt.Printf("KMSG: <%d> %s", level, msg)
		}
	}
}
