# shellcheck shell=bash
# Console-log verdicts of a VM run, sourced by e2e/run.sh and tested without booting by
# e2e/guest/verdict_test.go (canned logs in e2e/guest/testdata/console/). Each check prints
# "RESULT <what> FAIL <reason>" on stdout (details on stderr) and returns 1 when the log
# fails it, 0 when it passes. The kernel is booted with oops=panic and
# sysctl.kernel.hung_task_timeout_secs=15 (vm_kernel_cmdline), so crashes and stuck tasks
# reach the console (the guest streams every kernel message of level warning or worse
# to it as "KMSG: <level> ...", since "quiet" hides them).

# Guest kernel command line parameters that make problems visible: an oops panics (and so
# ends the VM instead of limping on), a task blocked 15 s is reported. The hung-task
# timeout has no boot parameter of its own; sysctl.<name>= sets it (CONFIG_PROC_SYSCTL).
vm_kernel_cmdline() {
	echo "oops=panic sysctl.kernel.hung_task_timeout_secs=15"
}

# Extended regular expression of console lines that report a kernel problem:
#   Oops / BUG / WARNING as words (BUG: also covers soft lockups, KASAN, bad page state);
#   a die() banner "<trap>: <code> [#<n>]" (6.1 prints "general protection fault, probably
#   for non-canonical address ...: 0000 [#1] PREEMPT SMP" and "invalid opcode: 0000 [#1]"
#   without the word Oops); "general protection fault" anywhere (also a user-space GPF);
#   Kernel panic; hung tasks ("INFO: task x:1 blocked for more than 15 seconds"); RCU
#   stalls ("rcu: INFO: rcu_preempt detected stalls", "self-detected stall"); call traces;
#   UBSAN reports; hard lockups.
VM_KERNEL_PROBLEM_RE='(^|[^A-Za-z_])(Oops|BUG|WARNING)([^A-Za-z_]|$)|: [0-9a-f]{4} \[#[0-9]+\]|general protection fault|Kernel panic|blocked for more than [0-9]+ seconds|rcu.*(detected stalls|self-detected stall|stall on CPU)|Call Trace:|UBSAN:|hard LOCKUP|Unable to handle kernel'

# vm_check_finished LOG [WHY]: the guest reached VMTEST-DONE.
vm_check_finished() {
	if ! grep -aq '^VMTEST-DONE' "$1"; then
		echo "RESULT vm FAIL ${2:-VM did not finish} (see $1)"
		tail -n 30 "$1" >&2
		return 1
	fi
	return 0
}

# vm_check_kernel LOG: no kernel crash, warning, hung task or RCU stall on the console.
# The guest's own lines (VMTEST...) are not kernel messages and are ignored.
vm_check_kernel() {
	local bad
	bad=$(tr -d '\r' <"$1" | grep -av '^VMTEST' | grep -aE "$VM_KERNEL_PROBLEM_RE" | head -5) || true
	if [ -n "$bad" ]; then
		echo "RESULT kernel-log FAIL console ($1) shows: $(echo "$bad" | head -1 | tr -s ' ' | cut -c1-160)"
		echo "$bad" >&2
		return 1
	fi
	return 0
}

# vm_check_results LOG NAME...: every requested scenario printed a VMTEST-RESULT line.
vm_check_results() {
	local log=$1 name rc=0
	shift
	for name in "$@"; do
		if ! tr -d '\r' <"$log" | grep -aqE "^VMTEST-RESULT: $name (PASS|FAIL|SKIP)( |$)"; then
			echo "RESULT $name FAIL requested but no result on the console (see $log)"
			rc=1
		fi
	done
	return $rc
}
