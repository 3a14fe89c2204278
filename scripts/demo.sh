#!/usr/bin/env bash
# make demo: the main job on built-in defaults. From this machine's ELF files it
# makes a source partition image and an updated (grown) target image, then:
#   1. cowctl create   diffs them into v3 (lz4, 64 KiB factor) and v2 (gz) COWs,
#                      the way AOSP create_snapshot does (safe merge order);
#   2. cowctl inspect  parses each COW, verifies the merge sequence and
#                      decompresses every op;
#   3. cowctl verify   reconstructs the snapshot view from source + COW;
#   4. cowctl apply    merges the COW into a copy of the source in place with
#                      snapuserd's crash-safe merge engine and compares the
#                      result with the target, byte for byte.
# It ends with the AOSP-identical cow_v2 fixture that the v2 writer rebuilds.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
BIN=${BIN:-$PWD/bin}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vabc-demo.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

step() { printf '\n==> %s\n' "$*"; }

step "building the tools"
mkdir -p "$BIN"
$GO build -o "$BIN/" ./cmd/...
$GO build -o "$WORK/mkcow" ./cow/testdata/mkcow

step "making an 8 MiB source image and an updated 9 MiB target image"
"$WORK/mkcow" images -mib 8 "$WORK"
SIZE=$(stat -c %s "$WORK/target.img")

for v in "3 lz4 --compression-factor 64K" "2 gz"; do
	set -- $v
	ver=$1 comp=$2 cowf="$WORK/system_v$1.cow"
	shift 2
	step "cowctl create --cow-version $ver --compression $comp $*"
	"$BIN/cowctl" create --source "$WORK/source.img" --target "$WORK/target.img" -o "$cowf" \
		--cow-version "$ver" --compression "$comp" --xor "$@"

	step "cowctl inspect --verify-merge-sequence --decompress system_v$ver.cow"
	"$BIN/cowctl" inspect --verify-merge-sequence --decompress "$cowf" | sed -n '1,24p'

	step "cowctl verify: source + COW == target"
	"$BIN/cowctl" verify --source "$WORK/source.img" --cow "$cowf" --target "$WORK/target.img"

	step "cowctl apply --in-place (the offline merge) and compare with the target"
	cp "$WORK/source.img" "$WORK/base.img"
	"$BIN/cowctl" apply --source "$WORK/base.img" --cow "$cowf" --in-place --size "$SIZE"
	if cmp -s "$WORK/base.img" "$WORK/target.img"; then
		echo "merged image == target image ($SIZE bytes)"
	else
		echo "MISMATCH: merged image differs from the target" >&2
		exit 1
	fi
	"$BIN/cowctl" inspect "$cowf" | grep -i 'merge ops' || true
done

step "the AOSP write_cow -write_legacy fixture, rebuilt bit for bit by our v2 writer"
sha256sum cow/testdata/v2_legacy.cow
"$BIN/cowctl" inspect --show-ops cow/testdata/v2_legacy.cow

echo
echo "demo: OK"
