#!/usr/bin/env bash
# make demo: build a source and a target partition image from this machine's
# ELF files, diff them into v3 (lz4, 64 KiB factor) and v2 (gz) COW images the
# way AOSP create_snapshot does, inspect them with cowctl, merge each COW into
# the source in merge order (in place, as snapuserd does) and check that the
# result is the target, byte for byte.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
BIN=${BIN:-$PWD/bin}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vabc-demo.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

step() { printf '\n==> %s\n' "$*"; }

step "building cowctl and mkcow"
mkdir -p "$BIN"
[ -x "$BIN/cowctl" ] || $GO build -o "$BIN/" ./cmd/cowctl
$GO build -o "$WORK/mkcow" ./cow/testdata/mkcow
MKCOW="$WORK/mkcow"

step "making an 8 MiB source image and an updated 9 MiB target image"
"$MKCOW" images -mib 8 "$WORK"

step "diffing them into COW images (v3 lz4 64K factor, v2 gz 1024-op clusters)"
"$MKCOW" diff -version 3 -compression lz4 -factor 65536 "$WORK/source.img" "$WORK/target.img" "$WORK/system_v3.cow"
"$MKCOW" diff -version 2 -compression gz "$WORK/source.img" "$WORK/target.img" "$WORK/system_v2.cow"

for cow in system_v3.cow system_v2.cow; do
	step "cowctl inspect --layout --verify-merge-sequence --decompress $cow"
	"$BIN/cowctl" inspect --layout --verify-merge-sequence --decompress "$WORK/$cow" | sed -n '1,40p'

	step "merging $cow into the source in merge order and comparing with the target"
	"$MKCOW" merge "$WORK/source.img" "$WORK/$cow" "$WORK/merged.img"
	if cmp -s "$WORK/merged.img" "$WORK/target.img"; then
		echo "merged image == target image ($(stat -c %s "$WORK/target.img") bytes)"
	else
		echo "MISMATCH: merged image differs from the target" >&2
		exit 1
	fi
done

step "first ops of the v3 COW in merge order (cowctl inspect --show-ops --order merge)"
"$BIN/cowctl" inspect --show-ops --order merge "$WORK/system_v3.cow" | sed -n '/^Merge order\|^ *[0-9]/p' | sed -n '1,12p' || true

step "AOSP write_cow -write_legacy rebuilt with the Go v2 writer (cow/testdata/v2_legacy.cow)"
echo "SHA-256 $(sha256sum cow/testdata/v2_legacy.cow | cut -d' ' -f1)"
echo "AOSP tools/testdata/cow_v2: afd7288855d0d9afd55e87910cc1886d7e73b97876cc4d15b85303d8027c8e2f"
"$BIN/cowctl" inspect --show-ops cow/testdata/v2_legacy.cow

echo
echo "demo: OK"
