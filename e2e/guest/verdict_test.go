package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The console verdicts of e2e/run.sh live in e2e/verdict.sh so that they can be tested
// here, on the host, with canned console logs instead of a VM boot.

const verdictScript = "../verdict.sh"

// runVerdict sources e2e/verdict.sh and runs fn (a function name) with the log file and
// extra arguments; it returns the exit status and stdout.
func runVerdict(t *testing.T, fn, log string, args ...string) (int, string) {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	p := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(p, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", append([]string{"-c", `. "$1" && shift && "$@"`, "_", verdictScript, fn, p}, args...)...)
	var out strings.Builder
	cmd.Stdout = &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

// A clean run's console: module taint notes, dm messages at warning level, the guest's own
// lines (which may contain any word, e.g. a scenario's failure reason), \r line ends.
const cleanConsole = "VMTEST: init start, uptime 3.21s\r\n" +
	"VMTEST: kernel 6.1.0-57-amd64\n" +
	"VMTEST: panic_on_oops=1 hung_task_timeout_secs=15\n" +
	"KMSG: <4> dm_user: loading out-of-tree module taints kernel.\n" +
	"KMSG: <4> dm_user: module verification failed: signature and/or required key missing - tainting kernel\n" +
	"KMSG: <6> device-mapper: ioctl: 4.47.0-ioctl (2022-07-28) initialised: dm-devel@redhat.com\n" +
	"KMSG: <4> device-mapper: user: t-bad: bad answer to seq 3 (len differs from the request): request failed\n" +
	"KMSG: <4> device-mapper: user: t-bad4: 1 request(s) unanswered for 1000 ms, failing them\n" +
	"KMSG: <3> device-mapper: table: 254:7: user: misc name in use by another mapped device (-EBUSY)\n" +
	"KMSG: <4> Buffer I/O error on dev dm-3, logical block 5, async page read\n" +
	"VMTEST: dmuser-bad-reply: daemon[120]: WARNING BUG Oops Call Trace: blocked for more than 15 seconds\n" +
	"VMTEST-RESULT: dm-ioctl PASS 0.61\r\n" +
	"VMTEST-RESULT: dmuser-bad-reply FAIL 3.10 reader saw general protection fault text\n" +
	"VMTEST-RESULT: snapuserd-user SKIP 0 not built\n" +
	"VMTEST-DONE\r\n"

func TestVerdictKernelLog(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string // added to the clean console; "" = the clean console itself
		bad  bool
	}{
		{"clean", "", false},
		{"oops", "Oops: 0002 [#1] PREEMPT SMP NOPTI", true},
		{"bug-null-deref", "BUG: kernel NULL pointer dereference, address: 0000000000000008", true},
		{"warning", "WARNING: CPU: 0 PID: 1 at drivers/md/dm.c:1234 dm_submit_bio+0x1c/0x80", true},
		{"warning-via-kmsg", "KMSG: <4> WARNING: CPU: 0 PID: 88 at lib/list_debug.c:59 __list_del_entry_valid+0x9f/0xd0", true},
		// 6.1 reports a GPF in the kernel with a die() banner but without "Oops".
		{"gpf-6.1", "general protection fault, probably for non-canonical address 0xdead000000000122: 0000 [#1] PREEMPT SMP NOPTI", true},
		{"gpf-user-space", "traps: snapuserd[212] general protection fault ip:4a3b2c sp:c000123f00 error:0 in snapuserd[401000+2f0000]", true},
		{"die-banner-invalid-opcode", "invalid opcode: 0000 [#1] PREEMPT SMP NOPTI", true},
		{"kernel-panic", "Kernel panic - not syncing: Fatal exception", true},
		{"hung-task", "KMSG: <3> INFO: task dd:240 blocked for more than 15 seconds.", true},
		{"rcu-stall", "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", true},
		{"rcu-self-stall", "KMSG: <3> rcu: INFO: rcu_sched self-detected stall on CPU", true},
		{"soft-lockup", "watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [init:1]", true},
		{"call-trace", "Call Trace:", true},
		{"ubsan", "UBSAN: shift-out-of-bounds in drivers/md/dm-user.c:123:4", true},
		{"crlf", "Kernel panic - not syncing: Attempted to kill init!\r", true},
		{"word-inside-name", "KMSG: <4> DEBUGFS_WARNINGS_X: BUGGY Oopsie", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := cleanConsole
			if tc.line != "" {
				log = strings.Replace(cleanConsole, "VMTEST-RESULT: dm-ioctl", tc.line+"\nVMTEST-RESULT: dm-ioctl", 1)
			}
			code, out := runVerdict(t, "vm_check_kernel", log)
			if tc.bad {
				if code == 0 || !strings.HasPrefix(out, "RESULT kernel-log FAIL") {
					t.Fatalf("status %d, output %q: want a kernel-log FAIL for %q", code, out, tc.line)
				}
			} else if code != 0 || out != "" {
				t.Fatalf("status %d, output %q: want a pass", code, out)
			}
		})
	}
}

func TestVerdictFinished(t *testing.T) {
	if code, out := runVerdict(t, "vm_check_finished", cleanConsole); code != 0 || out != "" {
		t.Errorf("finished console: status %d %q", code, out)
	}
	cut := strings.Replace(cleanConsole, "VMTEST-DONE\r\n", "", 1)
	if code, out := runVerdict(t, "vm_check_finished", cut, "VM killed after 420s timeout"); code == 0 ||
		!strings.HasPrefix(out, "RESULT vm FAIL VM killed after 420s timeout") {
		t.Errorf("console without VMTEST-DONE: status %d %q", code, out)
	}
}

func TestVerdictResults(t *testing.T) {
	for _, tc := range []struct {
		requested []string
		missing   []string
	}{
		{nil, nil},
		{[]string{"dm-ioctl", "dmuser-bad-reply", "snapuserd-user"}, nil},
		{[]string{"dm-ioctl", "dmuser-teardown"}, []string{"dmuser-teardown"}},
		{[]string{"dmuser", "dm-ioctl", "snapuserd-merge-kill"}, []string{"dmuser", "snapuserd-merge-kill"}},
		{[]string{"dm-ioct"}, []string{"dm-ioct"}},
	} {
		t.Run(strings.Join(tc.requested, ","), func(t *testing.T) {
			code, out := runVerdict(t, "vm_check_results", cleanConsole, tc.requested...)
			var want string
			for _, m := range tc.missing {
				want += "RESULT " + m + " FAIL requested but no result on the console"
			}
			got := out
			if i := strings.Index(got, " (see "); i >= 0 {
				// Drop the log paths: one "(see <path>)\n" per line.
				var b strings.Builder
				for _, l := range strings.Split(strings.TrimSpace(got), "\n") {
					l, _, _ = strings.Cut(l, " (see ")
					b.WriteString(l)
				}
				got = b.String()
			}
			if got != want || (code != 0) != (len(tc.missing) > 0) {
				t.Errorf("status %d, output %q; want %q", code, got, want)
			}
		})
	}
}

// The kernel command line the harness boots with makes oopses panic and reports tasks
// blocked for 15 s.
func TestVerdictKernelCmdline(t *testing.T) {
	code, out := runVerdict(t, "vm_kernel_cmdline", "")
	if code != 0 || !strings.Contains(out, "oops=panic") || !strings.Contains(out, "hung_task_timeout_secs=15") {
		t.Errorf("vm_kernel_cmdline: %d %q", code, out)
	}
}

// make test runs the VM tests when qemu is there; in CI (CI set) or with
// VABC_REQUIRE_VM=1 a missing qemu fails instead of passing silently.
func TestMakeTestRequiresVMInCI(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	for _, tc := range []struct {
		env  []string
		fail bool
		want string
	}{
		{[]string{"CI=true"}, true, "vm-test: FAIL"},
		{[]string{"VABC_REQUIRE_VM=1"}, true, "vm-test: FAIL"},
		{nil, false, "vm-test: skipped"},
	} {
		t.Run(strings.Join(tc.env, ","), func(t *testing.T) {
			cmd := exec.Command("make", "-s", "-C", "../..", "vm-test-if-available", "QEMU=/nonexistent/qemu-system-x86_64")
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "CI=") && !strings.HasPrefix(kv, "VABC_REQUIRE_VM=") && !strings.HasPrefix(kv, "MAKEFLAGS=") {
					cmd.Env = append(cmd.Env, kv)
				}
			}
			cmd.Env = append(cmd.Env, tc.env...)
			out, err := cmd.CombinedOutput()
			if (err != nil) != tc.fail || !strings.Contains(string(out), tc.want) {
				t.Errorf("make vm-test-if-available with %v: %v, output %q; want failure %v and %q", tc.env, err, out, tc.fail, tc.want)
			}
		})
	}
}

// Real consoles of passing runs (testdata/console/clean-*.log, copied from e2e/out) pass
// every check; the same console with a 6.1 kernel GPF report (no "Oops" in it) spliced in
// fails the kernel check.
func TestVerdictRealConsoles(t *testing.T) {
	logs, err := filepath.Glob("testdata/console/clean-*.log")
	if err != nil || len(logs) == 0 {
		t.Fatalf("no real consoles: %v", err)
	}
	const gpf = "KMSG: <4> general protection fault, probably for non-canonical address 0xdead000000000122: 0000 [#1] PREEMPT SMP NOPTI\n" +
		"KMSG: <4> CPU: 0 PID: 131 Comm: init Tainted: G           OE      6.1.0-57-amd64 #1  Debian 6.1.192-3\n" +
		"KMSG: <4> RIP: 0010:dmu_write_iter+0x1a2/0x520 [dm_user]\n"
	for _, p := range logs {
		t.Run(filepath.Base(p), func(t *testing.T) {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			log := string(b)
			var names []string
			for _, l := range strings.Split(log, "\n") {
				if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "VMTEST-RESULT: "); ok {
					names = append(names, strings.Fields(rest)[0])
				}
			}
			if len(names) == 0 {
				t.Fatal("no results in the console")
			}
			for _, fn := range []string{"vm_check_finished", "vm_check_kernel"} {
				if code, out := runVerdict(t, fn, log); code != 0 {
					t.Errorf("%s: status %d %q", fn, code, out)
				}
			}
			if code, out := runVerdict(t, "vm_check_results", log, names...); code != 0 {
				t.Errorf("vm_check_results %v: status %d %q", names, code, out)
			}
			i := strings.Index(log, "VMTEST-RESULT: ")
			if code, _ := runVerdict(t, "vm_check_kernel", log[:i]+gpf+log[i:]); code == 0 {
				t.Error("a GPF report in a real console passed the kernel check")
			}
		})
	}
}
