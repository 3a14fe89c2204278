#!/usr/bin/env bash
# VM integration tests (vm-harness.md §13): build the dm-user module against Debian's kernel
# headers and the static Go /init, pack an initramfs, boot Debian's kernel under
# qemu-system-x86_64 -accel tcg (never kvm: it hangs stock kernels on this host type), run
# every scenario in one boot and print
#   RESULT <scenario> PASS | FAIL <reason> | SKIP <reason>
#   vm-test took <seconds>s
# Exit status is non-zero when a scenario fails, is missing (SKIP) or was requested but
# printed no result, the VM does not finish, or the console shows a kernel crash, warning,
# hung task or RCU stall (e2e/verdict.sh; the guest boots with oops=panic and a 15 s
# hung-task timeout). Scenarios with an
# after-reboot check (the snapuserd ones: the merged base must equal the target) print
# VMTEST-REBOOT when their first half passed; the VM is then booted a second time with the
# same disk images to run those checks, and the scenario passes only if both halves do.
#
# Usage: bash e2e/run.sh [scenario ...]     (default: all)
# Env:   VABC_KERNEL=bpo  boot the bookworm-backports kernel (6.12) instead of the default
#        VM_TIMEOUT (s, default 420)  VM_MEM (default 512M)  VM_SMP (default 1)
#        VABC_VM_REQUIRE_ALL (default 1) count scenarios that are not present (SKIP) as
#                         failures; 0 lets a run with SKIPs pass
#        VM_SNAP_NEW_MIB (default 12) size of the new file in the snapuserd target image
#        VM_REPEAT=N  run each scenario N times in the boot (race hunting)
#        VABC_VM_SKIP="a b"  leave these guest scenarios out of a default (all) run
#        KEEP=1  keep e2e/out/initramfs staging for inspection
set -euo pipefail
cd "$(dirname "$0")/.."
# Hook: the OTA-on-boot scenarios (ota, power-cut, rollback) boot their own VMs several
# times (e2e/ota.sh, e2e/otahost); they are split off the guest scenario list here.
# VABC_OTA=0 leaves them out of a default (all) run.
ota_args=() guest_args=()
for a in "$@"; do case $a in ota | power-cut | rollback) ota_args+=("$a") ;; *) guest_args+=("$a") ;; esac; done
ota_only=0
if [ $# -eq 0 ]; then
	[ "${VABC_OTA:-1}" = 0 ] || ota_args=(ota power-cut rollback)
elif [ ${#guest_args[@]} -eq 0 ]; then ota_only=1; fi
set -- "${guest_args[@]}"
ROOT=$PWD
# shellcheck source=e2e/verdict.sh
. e2e/verdict.sh
OUT=$ROOT/e2e/out
mkdir -p "$OUT"
t_start=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
say() { echo "vm-test: $*" >&2; }

for tool in qemu-system-x86_64 busybox cpio depmod modprobe make gcc; do
	command -v "$tool" >/dev/null 2>&1 || { say "missing $tool (run make deps)"; exit 1; }
done
BUSYBOX=$(command -v busybox)
if ! file -L "$BUSYBOX" 2>/dev/null | grep -q static && [ -x /bin/busybox ]; then BUSYBOX=/bin/busybox; fi

# 1. Kernel image + headers (cached by version; only downloads when Debian moved on).
VABC_FETCH_IF_MISSING=1 bash e2e/fetch-kernel.sh
# shellcheck disable=SC1090
. "e2e/cache/current${VABC_KERNEL:+-$VABC_KERNEL}.env"
say "kernel $KVER ($KVERSION)"

# 2. Our dm-user module, built out of tree in a scratch copy (keeps the source dir clean).
t0=$(date +%s.%N)
MODB=$OUT/dm-user-build
rm -rf "$MODB" && mkdir -p "$MODB"
cp kernel/dm-user/Kbuild kernel/dm-user/*.c kernel/dm-user/*.h "$MODB"/
# W=1: the extra warnings must stay clean on both kernels (any warning fails below).
if ! make -s -C "$KBUILD" M="$MODB" W=1 modules >"$OUT/module-build.log" 2>&1; then
	cat "$OUT/module-build.log" >&2
	echo "RESULT module-build FAIL make -C $KBUILD failed"
	exit 1
fi
if grep -E '(warning|error):' "$OUT/module-build.log" >&2; then
	echo "RESULT module-build FAIL compiler warnings"
	exit 1
fi
vermagic=$(modinfo -F vermagic "$MODB/dm-user.ko" | awk '{print $1}')
[ "$vermagic" = "$KVER" ] || { echo "RESULT module-build FAIL vermagic $vermagic != $KVER"; exit 1; }
say "module built in $(elapsed "$t0")s"

# 3. Static Go /init (multi-call: also the passthrough daemon).
t0=$(date +%s.%N)
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$OUT/init" ./e2e/guest
# Product binaries the snapuserd scenarios will drive, when their packages exist.
GUEST_BINS=()
for c in snapuserd snapshotctl; do
	rm -f "$OUT/$c"
	if [ -d "cmd/$c" ]; then
		CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$OUT/$c" "./cmd/$c"
		GUEST_BINS+=("$OUT/$c")
	fi
done
# cowctl runs on the host: it builds the snapuserd scenarios' COW.
CGO_ENABLED=0 go build -trimpath -o "$OUT/cowctl" ./cmd/cowctl
say "go build in $(elapsed "$t0")s"

# 4. Initramfs: busybox, modules (+ dependencies, decompressed), dm-user.ko, /init.
t0=$(date +%s.%N)
STAGE=$(mktemp -d "$OUT/stage.XXXXXX")
cleanup_stage() { [ "${KEEP:-}" = 1 ] || rm -rf "$STAGE"; }
QEMU_PID=
on_exit() {
	if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then kill -KILL "$QEMU_PID" 2>/dev/null || true; fi
	cleanup_stage
}
trap on_exit EXIT
trap 'exit 130' INT TERM
mkdir -p "$STAGE"/{bin,sbin,etc,proc,sys,dev,tmp,run,mnt,lib/modules/"$KVER"/kernel,lib/modules/"$KVER"/extra}
cp "$BUSYBOX" "$STAGE/bin/busybox"
# The applet links are made by the guest's /init (busybox --install -s /bin): one process
# there instead of ~400 ln forks here.
for a in sh dd; do ln -sf busybox "$STAGE/bin/$a"; done
for a in modprobe insmod rmmod; do ln -sf ../bin/busybox "$STAGE/sbin/$a"; done
# dmsetup (dynamically linked in Debian) with its libraries: the guest cross-checks our Go
# ioctl encoding against libdevmapper ("dmsetup targets", "dmsetup table").
if DMSETUP=$(command -v dmsetup); then
	cp -L "$DMSETUP" "$STAGE/sbin/dmsetup"
	for lib in $(ldd "$DMSETUP" | grep -oE '/[^ ]+'); do
		mkdir -p "$STAGE$(dirname "$lib")"
		cp -L "$lib" "$STAGE$lib"
	done
fi
MODS="virtio_pci virtio_blk dm-mod dm-snapshot dm-zero loop ext4"
for m in $MODS; do
	modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | sort -u | while read -r ko; do
	rel=${ko#"$KROOT"/lib/modules/"$KVER"/}
	dst=$STAGE/lib/modules/$KVER/$rel
	mkdir -p "$(dirname "$dst")"
	case $ko in
	*.xz) xz -dc "$ko" >"${dst%.xz}" ;;
	*.zst) zstd -qdc "$ko" >"${dst%.zst}" ;;
	*.gz) gzip -dc "$ko" >"${dst%.gz}" ;;
	*) cp "$ko" "$dst" ;;
	esac
done
for f in modules.builtin modules.builtin.modinfo modules.order; do
	[ -e "$KROOT/lib/modules/$KVER/$f" ] && cp "$KROOT/lib/modules/$KVER/$f" "$STAGE/lib/modules/$KVER/"
done
cp "$MODB/dm-user.ko" "$STAGE/lib/modules/$KVER/extra/"
depmod -b "$STAGE" "$KVER"
cp "$OUT/init" "$STAGE/init"
for b in "${GUEST_BINS[@]}"; do cp "$b" "$STAGE/bin/"; done
chmod 755 "$STAGE/init"
(cd "$STAGE" && find . -print0 | cpio --null -o -H newc --quiet) >"$OUT/initramfs.cpio"
say "initramfs $(du -h "$OUT/initramfs.cpio" | cut -f1) in $(elapsed "$t0")s"
cleanup_stage
if [ "$ota_only" = 1 ]; then
	rc=0
	bash e2e/ota.sh "$OUT/initramfs.cpio" "$VMLINUX" "${ota_args[@]}" || rc=$?
	echo "vm-test took $(elapsed "$t_start")s"
	exit $rc
fi

# 5. Fresh disks. vda/vdb: scratch for the dm scenarios. vdc..vdg: the snapuserd scenarios'
# partitions (snapuserd.md §1 mode B): a base and a target ext4 image made with
# mkfs.ext4 -d from two trees (the target changes files in place, renames one, adds a large
# new file and a token file) and the COW between them from cowctl create; each scenario gets
# its own base + COW (both are written by the merge), vdg is a read-only target copy.
t0=$(date +%s.%N)
rm -f "$OUT"/vd?.img
truncate -s 64M "$OUT/vda.img"
truncate -s 16M "$OUT/vdb.img"
SNAP=$OUT/snap
rm -rf "$SNAP" && mkdir -p "$SNAP/base/bin" "$SNAP/base/etc" "$SNAP/base/lib"
head -c 4M /dev/urandom >"$SNAP/base/bin/app"
head -c 2M /dev/urandom >"$SNAP/base/lib/libold.so"
head -c 1M /dev/zero >"$SNAP/base/lib/zeros"
echo 1 >"$SNAP/base/etc/version"
cp -a "$SNAP/base" "$SNAP/target"
dd if=/dev/urandom of="$SNAP/target/bin/app" bs=64K seek=20 count=2 conv=notrunc status=none
mv "$SNAP/target/lib/libold.so" "$SNAP/target/lib/libnew.so"
echo 2 >"$SNAP/target/etc/version"
mkdir -p "$SNAP/target/data" "$SNAP/target/vabc"
head -c "${VM_SNAP_NEW_MIB:-12}M" /dev/urandom >"$SNAP/target/data/new.bin"
token=$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')
echo "$token" >"$SNAP/target/vabc/token.txt"
for t in base target; do
	mkfs.ext4 -q -F -b 4096 -E root_owner=0:0 -d "$SNAP/$t" "$SNAP/$t.img" 40M
done
"$OUT/cowctl" create --source "$SNAP/base.img" --target "$SNAP/target.img" -o "$SNAP/cow.img" >"$SNAP/cowctl.log" 2>&1 ||
	{ cat "$SNAP/cowctl.log" >&2; echo "RESULT snapshot-images FAIL cowctl create failed"; exit 1; }
truncate -s %4096 "$SNAP/cow.img" # a whole number of sectors for the virtio disk
target_sha=$(sha256sum "$SNAP/target.img" | cut -c1-64)
# The guest copies the pristine base + COW (vdh, vdi) over its working disks at the start of
# each scenario run; these are just blank disks of the right size.
base_size=$(stat -c %s "$SNAP/base.img")
cow_size=$(stat -c %s "$SNAP/cow.img")
truncate -s "$base_size" "$OUT/vdc.img" "$OUT/vde.img" "$OUT/vdj.img"
truncate -s "$cow_size" "$OUT/vdd.img" "$OUT/vdf.img" "$OUT/vdk.img"
mv "$SNAP/target.img" "$OUT/vdg.img"
mv "$SNAP/base.img" "$OUT/vdh.img"
mv "$SNAP/cow.img" "$OUT/vdi.img"
rm -rf "$SNAP/base" "$SNAP/target"
say "snapshot images in $(elapsed "$t0")s (COW $((cow_size >> 10)) KiB, target sha256 ${target_sha:0:16}…)"

# VABC_VM_SKIP="a b": a default (all) run leaves these guest scenarios out (make vm-test runs
# snapuserd-hybrid on 6.1 only, to keep make test under 15 minutes).
if [ $# -eq 0 ] && [ -n "${VABC_VM_SKIP:-}" ]; then
	keep=()
	while read -r s; do
		case " $VABC_VM_SKIP " in *" $s "*) say "$s skipped (VABC_VM_SKIP)" ;; *) keep+=("$s") ;; esac
	done < <("$OUT/init" list-scenarios)
	set -- "${keep[@]}"
fi
run_filter=all
if [ $# -gt 0 ]; then run_filter=$(IFS=,; echo "$*"); fi
VM_TIMEOUT=${VM_TIMEOUT:-420}
timed_out=0

# boot LOG APPEND: one VM run with every disk; qemu is killed after VM_TIMEOUT.
boot() {
	local log=$1 append=$2 deadline
	qemu-system-x86_64 -accel tcg -cpu max -m "${VM_MEM:-512M}" -smp "${VM_SMP:-1}" \
		-nodefaults -display none -serial stdio -no-reboot \
		-kernel "$VMLINUX" -initrd "$OUT/initramfs.cpio" \
		-append "console=ttyS0 panic=-1 quiet no_timer_check $(vm_kernel_cmdline) $append" \
		-drive file="$OUT/vda.img",if=virtio,format=raw,cache=unsafe \
		-drive file="$OUT/vdb.img",if=virtio,format=raw,cache=unsafe \
		-drive file="$OUT/vdc.img",if=virtio,format=raw,cache=unsafe \
		-drive file="$OUT/vdd.img",if=virtio,format=raw,cache=unsafe \
		-drive file="$OUT/vde.img",if=virtio,format=raw,cache=unsafe \
		-drive file="$OUT/vdf.img",if=virtio,format=raw,cache=unsafe \
		-drive file="$OUT/vdg.img",if=virtio,format=raw,readonly=on \
		-drive file="$OUT/vdh.img",if=virtio,format=raw,readonly=on \
		-drive file="$OUT/vdi.img",if=virtio,format=raw,readonly=on \
		-drive file="$OUT/vdj.img",if=virtio,format=raw,cache=unsafe \
		-drive file="$OUT/vdk.img",if=virtio,format=raw,cache=unsafe \
		</dev/null >"$log" 2>&1 &
	QEMU_PID=$!
	deadline=$(($(date +%s) + VM_TIMEOUT))
	while kill -0 "$QEMU_PID" 2>/dev/null; do
		if [ "$(date +%s)" -ge "$deadline" ]; then
			timed_out=1
			kill -KILL "$QEMU_PID" 2>/dev/null || true
			break
		fi
		sleep 0.2
	done
	wait "$QEMU_PID" 2>/dev/null || true
	QEMU_PID=
}

fail=0
# judge_console LOG NAME...: the console verdicts of one boot (e2e/verdict.sh): the guest
# finished, the kernel log is clean, and every requested scenario printed a result.
judge_console() {
	local log=$1 why="VM did not finish"
	shift
	[ "$timed_out" = 1 ] && why="VM killed after ${VM_TIMEOUT}s timeout"
	vm_check_finished "$log" "$why" || fail=1
	vm_check_kernel "$log" || fail=1
	vm_check_results "$log" "$@" || fail=1
}
# The scenarios this run asks for: the named ones, or every registered one.
if [ $# -gt 0 ]; then
	requested=("$@")
else
	mapfile -t requested < <("$OUT/init" list-scenarios)
fi

# 6. First boot: every scenario.
LOG=$OUT/console.log
t_vm=$(date +%s.%N)
boot "$LOG" "vabc.run=$run_filter vabc.repeat=${VM_REPEAT:-1} vabc.snap=$target_sha:$token"
vm_secs=$(elapsed "$t_vm")
boot=$(tr -d '\r' <"$LOG" | sed -n 's/^VMTEST: init start, uptime \([0-9.]*\)s.*/\1/p' | head -1)
say "VM ran ${vm_secs}s (kernel reached /init at ${boot:-?}s guest time); console log: $LOG"

# Verdicts from the console only (qemu's exit status says nothing: vm-harness.md §9.2).
declare -A verdict=() secs=() reason=()
order=()
while read -r _ name v t r; do
	[ -n "${verdict[$name]:-}" ] || order+=("$name")
	verdict[$name]=$v secs[$name]=$t reason[$name]=$r
done < <(grep -a '^VMTEST-RESULT: ' "$LOG" | tr -d '\r')
mapfile -t reboot < <(grep -a '^VMTEST-REBOOT: ' "$LOG" | tr -d '\r' | awk '{print $2}')
judge_console "$LOG" "${requested[@]}"

# 7. Second boot with the same disks for the after-reboot checks of the scenarios that passed.
if [ ${#reboot[@]} -gt 0 ]; then
	LOG2=$OUT/console-reboot.log
	t_vm=$(date +%s.%N)
	boot "$LOG2" "vabc.run=$(IFS=,; echo "${reboot[*]}") vabc.boot=2 vabc.snap=$target_sha:$token"
	say "VM rebooted for ${reboot[*]}: ran $(elapsed "$t_vm")s; console log: $LOG2"
	declare -A seen2=()
	while read -r _ name v t r; do
		seen2[$name]=1
		verdict[$name]=$v reason[$name]=$r
		secs[$name]="${secs[$name]}+${t}"
	done < <(grep -a '^VMTEST-RESULT: ' "$LOG2" | tr -d '\r')
	for name in "${reboot[@]}"; do
		if [ -z "${seen2[$name]:-}" ]; then
			verdict[$name]=FAIL reason[$name]="no result after the reboot (see $LOG2)"
		fi
	done
	judge_console "$LOG2"
fi

for name in "${order[@]}"; do
	case ${verdict[$name]} in
	PASS) echo "RESULT $name PASS"; say "$name took ${secs[$name]}s" ;;
	SKIP)
		echo "RESULT $name SKIP ${reason[$name]}"
		[ "${VABC_VM_REQUIRE_ALL:-1}" = 0 ] || fail=1
		;;
	*)
		echo "RESULT $name FAIL ${reason[$name]:-no reason given}"
		say "$name took ${secs[$name]}s"
		fail=1
		;;
	esac
done
grep -ah '^VMTEST-METRIC: ' "$LOG" | tr -d '\r' | sed 's/^VMTEST-METRIC: /vm-test: metric /' >&2 || true
# The guest's PERF lines (read-rate ratios, make bench's VM section) go to stdout as they are.
grep -ah '^PERF ' "$LOG" | tr -d '\r' || true
if [ ${#ota_args[@]} -gt 0 ]; then
	bash e2e/ota.sh "$OUT/initramfs.cpio" "$VMLINUX" "${ota_args[@]}" || fail=1
fi
if [ ${#order[@]} -eq 0 ]; then
	echo "RESULT vm FAIL no scenario reported a result"
	fail=1
fi
echo "vm-test took $(elapsed "$t_start")s"
exit $fail
