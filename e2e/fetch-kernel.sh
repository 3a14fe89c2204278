#!/usr/bin/env bash
# Downloads the Debian kernel that linux-image-amd64 currently points to, plus the headers
# of exactly that ABI, and unpacks them under e2e/cache/<abi>_<version>/ without installing
# anything on the host (vm-harness.md §2.2). Only apt-get (update of a private backports index, download) touches the network.
#
# Result: e2e/cache/current.env (sourced by e2e/run.sh) with
#   KVER     kernel release, e.g. 6.1.0-56-amd64
#   KROOT    unpacked linux-image tree (boot/, lib/modules/$KVER/)
#   VMLINUX  uncompressed PVH-bootable vmlinux (vm-harness.md §4.2)
#   KBUILD   kernel build dir to pass as `make -C $KBUILD M=...`
#
# The cache is keyed by ABI and package version, so when Debian moves to a newer kernel the
# old cache stays usable and the new one is fetched next to it. If the mirror is unreachable
# but a cache exists, the newest cached kernel is used.
#
# VABC_KERNEL=bpo fetches the bookworm-backports kernel instead (6.12 at the time of
# writing) through a private apt state under e2e/cache/apt-bpo, without touching the host's
# apt sources (vm-harness.md §2.3); the result is e2e/cache/current-bpo.env. Building the
# module against 6.12 headers needs pahole (package dwarves).
# VABC_KERNEL_PKG=linux-image-...-amd64 selects an explicit image package.
set -euo pipefail
cd "$(dirname "$0")"
CACHE=$PWD/cache
mkdir -p "$CACHE"
flavour=${VABC_KERNEL:-}
envname=current${flavour:+-$flavour}.env
# e2e/run.sh passes VABC_FETCH_IF_MISSING=1: reuse the cached kernel without asking apt
# (apt-cache takes seconds on a busy host). make deps-refresh (VABC_DEPS_REFRESH=1 scripts/deps.sh) re-resolves.
if [ "${VABC_FETCH_IF_MISSING:-}" = 1 ] && [ -e "$CACHE/$envname" ]; then
	# shellcheck disable=SC1090
	. "$CACHE/$envname"
	if [ -e "$VMLINUX" ] && [ -d "$KBUILD" ]; then
		echo "fetch-kernel: using cached $KVER ($KVERSION); make deps-refresh checks for a newer one" >&2
		exit 0
	fi
fi
APTO=()
case $flavour in
"") ;;
bpo)
	st=$CACHE/apt-bpo
	mkdir -p "$st/lists/partial" "$st/cache/archives/partial"
	# The Debian mirror the host already uses (one-line or deb822 sources).
	mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
		grep -oE 'https?://[^ ]*/debian/?( |$)' | head -1 | tr -d ' ' || true)
	mirror=${mirror:-http://deb.debian.org/debian}
	keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	opt=""
	[ -e "$keyring" ] && opt="[signed-by=$keyring] "
	echo "deb $opt$mirror bookworm-backports main" >"$st/sources.list"
	APTO=(-o "Dir::Etc::SourceList=$st/sources.list" -o Dir::Etc::SourceParts=/nonexistent
		-o "Dir::State::Lists=$st/lists" -o "Dir::Cache=$st/cache")
	apt-get "${APTO[@]}" update -qq >&2 || echo "fetch-kernel: backports index update failed" >&2
	;;
*)
	echo "fetch-kernel: unknown VABC_KERNEL=$flavour (want empty or bpo)" >&2
	exit 2
	;;
esac

log() { echo "fetch-kernel: $*" >&2; }

use_cached() {
	local newest
	newest=$(ls -1dt "$CACHE"/*/.complete-$envname 2>/dev/null | head -1 || true)
	if [ -z "$newest" ]; then
		log "no cached kernel and $1"
		exit 1
	fi
	ln -sfn "$(dirname "$newest")/current.env" "$CACHE/$envname"
	log "$1; using cached $(dirname "$newest")"
	exit 0
}

img_pkg=${VABC_KERNEL_PKG:-}
if [ -z "$img_pkg" ]; then
	img_pkg=$(apt-cache "${APTO[@]}" depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -1 || true)
fi
[ -n "$img_pkg" ] || use_cached "apt-cache knows no linux-image-amd64 (run apt-get update)"
flavour_abi=${img_pkg#linux-image-}          # 6.1.0-56-amd64
kver=$flavour_abi
abi=${flavour_abi%-amd64}                     # 6.1.0-56
version=$(apt-cache "${APTO[@]}" show "$img_pkg" 2>/dev/null | sed -n 's/^Version: //p' | head -1)
[ -n "$version" ] || use_cached "apt-cache has no version for $img_pkg"

hdr_pkg=linux-headers-$kver
common_pkg=$(apt-cache "${APTO[@]}" depends "$hdr_pkg" 2>/dev/null | sed -n 's/^ *Depends: \(linux-headers-[^ ]*-common[^ ]*\)$/\1/p' | head -1)
kbuild_pkg=$(apt-cache "${APTO[@]}" depends "$hdr_pkg" 2>/dev/null | sed -n 's/^ *Depends: \(linux-kbuild-[^ ]*\)$/\1/p' | head -1)
[ -n "$common_pkg" ] && [ -n "$kbuild_pkg" ] || use_cached "cannot resolve the dependencies of $hdr_pkg"

dir=$CACHE/${kver}_${version}
if [ -e "$dir/.complete" ]; then
	ln -sfn "$dir/current.env" "$CACHE/$envname"
	log "cached: $kver ($version) in $dir"
	exit 0
fi
log "fetching $img_pkg $hdr_pkg $common_pkg $kbuild_pkg ($version)"
rm -rf "$dir"
mkdir -p "$dir/debs" "$dir/kroot" "$dir/hdr"
(cd "$dir/debs" && apt-get "${APTO[@]}" download -q "$img_pkg" "$hdr_pkg" "$common_pkg" "$kbuild_pkg") ||
	use_cached "apt-get download failed"

log "unpacking"
dpkg-deb -x "$dir/debs/${img_pkg}"_*.deb "$dir/kroot"
for p in "$hdr_pkg" "$common_pkg" "$kbuild_pkg"; do
	dpkg-deb -x "$dir/debs/${p}"_*.deb "$dir/hdr"
done
# The .deb has no modules.dep (postinst normally runs depmod).
depmod -b "$dir/kroot" "$kver"

# The headers tree refers to /usr/src/... and /usr/lib/linux-kbuild-* by absolute path:
# the flavour Makefile includes the common tree's Makefile, and scripts/ and tools/ are
# absolute symlinks into the kbuild package. Point all of them into our unpacked copy.
kbuild=$dir/hdr/usr/src/linux-headers-$kver
[ -d "$kbuild" ] || { log "headers tree $kbuild missing"; exit 1; }
sed -i "s#/usr/src/#$dir/hdr/usr/src/#g" "$kbuild/Makefile"
find "$dir/hdr/usr/src" -maxdepth 2 -type l | while read -r l; do
	t=$(readlink "$l")
	case $t in
	/*) ln -sfn "$dir/hdr$t" "$l" ;;
	esac
done

# Uncompressed vmlinux for qemu's PVH entry (vm-harness.md §4.2): much faster under TCG
# than SeaBIOS + in-guest decompression.
vmlinuz=$dir/kroot/boot/vmlinuz-$kver
vmlinux=$dir/vmlinux-$kver
extract() { # magic, decompressor...
	local pos
	pos=$(LC_ALL=C grep -abo "$1" "$vmlinuz" | head -1 | cut -d: -f1 || true)
	[ -n "$pos" ] || return 1
	shift
	tail -c +$((pos + 1)) "$vmlinuz" | "$@" >"$vmlinux" 2>/dev/null || true
	readelf -n "$vmlinux" 2>/dev/null | grep -q '0x00000012'
}
extract $'\xfd7zXZ\x00' xz -dc ||
	extract $'\x28\xb5\x2f\xfd' zstd -qdc ||
	extract $'\x02\x21\x4c\x18' lz4 -dc ||
	{ log "could not extract a PVH vmlinux from $vmlinuz"; rm -f "$vmlinux"; exit 1; }

cat >"$dir/current.env" <<EOF
KVER=$kver
KVERSION=$version
KROOT=$dir/kroot
VMLINUX=$vmlinux
KBUILD=$kbuild
EOF
touch "$dir/.complete" "$dir/.complete-$envname"
ln -sfn "$dir/current.env" "$CACHE/$envname"
log "ok: $kver ($version) in $dir"
