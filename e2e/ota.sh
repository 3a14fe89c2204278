#!/usr/bin/env bash
# OTA-on-boot VM scenarios (ota, power-cut, rollback): cmd/vabc-init as /init, several boots
# per scenario over the same four disks, driven by the host program e2e/otahost. Called by
# e2e/run.sh after it built the base initramfs (modules, dm-user.ko, busybox, dmsetup):
#
#   bash e2e/ota.sh BASE_INITRAMFS VMLINUX [scenario ...]     (default: all three)
#
# Env: VABC_POWERCUT_SEED (default: from the clock), VABC_POWERCUT_CUTS (default 5;
#      VABC_SOAK=1 makes it 20), VM_MEM, VABC_OTA_REUSE=1 (keep the images and payload of
#      the previous run: debugging only), VABC_OTA_APPEND (extra guest kernel parameters on
#      every boot, e.g. vabc.hybrid=1 for the hybrid snapshot tables).
# Prints RESULT <scenario> PASS|FAIL and POWERCUT <seed> <merge percent at cut> lines.
set -euo pipefail
cd "$(dirname "$0")/.."
base_initrd=$1 vmlinux=$2
shift 2
scen=ota,power-cut,rollback
if [ $# -gt 0 ]; then scen=$(IFS=,; echo "$*"); fi
OUT=$PWD/e2e/out/ota
reuse=0
if [ "${VABC_OTA_REUSE:-0}" = 1 ] && [ -s "$OUT/stage/ota/payload.bin" ]; then
	reuse=1
	rm -rf "$OUT"/{install,ota,power-cut-*,rollback}
else
	rm -rf "$OUT"
fi
mkdir -p "$OUT/bin" "$OUT/stage/bin" "$OUT/stage/ota"
say() { echo "vm-test: $*" >&2; }
t0=$(date +%s)

for c in vabc-init snapuserd payload; do
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$OUT/bin/$c" "./cmd/$c"
done
CGO_ENABLED=0 go build -trimpath -o "$OUT/bin/otahost" ./e2e/otahost

if [ "$reuse" = 0 ]; then
# Two small ext4 system images: the new one patches a binary in place, renames a library,
# changes the version and adds a file (the merge then copies, overwrites and adds blocks).
T=$OUT/trees
mkdir -p "$T/old/bin" "$T/old/etc" "$T/old/lib"
head -c 1536K /dev/urandom >"$T/old/bin/app"
head -c 512K /dev/urandom >"$T/old/lib/libold.so"
echo 1 >"$T/old/etc/version"
cp -a "$T/old" "$T/new"
dd if=/dev/urandom of="$T/new/bin/app" bs=64K seek=4 count=4 conv=notrunc status=none
mv "$T/new/lib/libold.so" "$T/new/lib/libnew.so"
echo 2 >"$T/new/etc/version"
head -c "${VABC_OTA_NEW_KIB:-4096}K" /dev/urandom >"$T/new/bin/new.bin"
mkdir -p "$OUT/img/old" "$OUT/img/new"
SYS_MIB=12
for t in old new; do
	mkfs.ext4 -q -F -b 4096 -E root_owner=0:0 -U clear -d "$T/$t" "$OUT/img/$t/system.img" ${SYS_MIB}M >/dev/null
done
"$OUT/bin/payload" generate --old "$OUT/img/old" --new "$OUT/img/new" --vabc --cow-version 3 --vabc-compression lz4 \
	-o "$OUT/stage/ota/payload.bin" >"$OUT/generate.log" 2>&1 || { cat "$OUT/generate.log" >&2; echo "RESULT ota FAIL payload generate failed"; exit 1; }
fi
old_sha=$(sha256sum "$OUT/img/old/system.img" | cut -c1-64)
new_sha=$(sha256sum "$OUT/img/new/system.img" | cut -c1-64)
sys_bytes=$(stat -c %s "$OUT/img/old/system.img")

# Initramfs: the base archive plus a second one (the kernel unpacks both, later files win):
# /init = vabc-init, the product binaries, the payload.
cp "$OUT/bin/vabc-init" "$OUT/stage/init"
cp "$OUT/bin/snapuserd" "$OUT/bin/payload" "$OUT/stage/bin/"
cp "$base_initrd" "$OUT/initramfs.cpio"
(cd "$OUT/stage" && find . -print0 | cpio --null -o -H newc --quiet) >>"$OUT/initramfs.cpio"

# Disks: super = the old image at sector 0 (in-place layout: system_a and system_b share
# it), metadata (ext4, the profile partition table), userdata (ext4, COW images), misc.
cp "$OUT/img/old/system.img" "$OUT/super.img"
T=$OUT/trees
mkdir -p "$T/meta/vabc"
echo "system /dev/vda 0 $((sys_bytes / 512))" >"$T/meta/vabc/partitions"
mkfs.ext4 -q -F -b 4096 -E root_owner=0:0 -d "$T/meta" "$OUT/metadata.img" 16M >/dev/null
mkfs.ext4 -q -F -b 4096 -E root_owner=0:0 "$OUT/userdata.img" 48M >/dev/null
rm -f "$OUT/misc.img" && truncate -s 64K "$OUT/misc.img"
say "ota images in $(($(date +%s) - t0))s (payload $(($(stat -c %s "$OUT/stage/ota/payload.bin") >> 10)) KiB, new sha256 ${new_sha:0:16}…)"

cuts=${VABC_POWERCUT_CUTS:-5}
[ "${VABC_SOAK:-0}" = 1 ] && cuts=${VABC_POWERCUT_CUTS:-20}
exec "$OUT/bin/otahost" -kernel "$vmlinux" -initrd "$OUT/initramfs.cpio" -dir "$OUT" -old-sha "$old_sha" -new-sha "$new_sha" \
	-system-bytes "$sys_bytes" -seed "${VABC_POWERCUT_SEED:-0}" -cuts "$cuts" -m "${VM_MEM:-512M}" -scenarios "$scen"
