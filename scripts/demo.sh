#!/usr/bin/env bash
# make demo: the whole OTA story on generated images (see demo/main.go):
# old + new ext4 system images → signed incremental payload (payload generate)
# → payload verify → the device's COW (payload apply-cow) → served by snapuserd
# (FUSE, or the in-process dm-user emulation) and compared with the new image
# → merged with a SIGKILL of the daemon in the middle and a restart → base ==
# new image, then a short report. Needs no root. Extra arguments go to the
# demo (e.g. scripts/demo.sh -keep -work /tmp/demo -frontend emulated).
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
BIN=${BIN:-$PWD/bin}
mkdir -p "$BIN"
echo "==> building the tools into $BIN"
CGO_ENABLED=0 $GO build -buildvcs=false -o "$BIN/" ./cmd/...
exec $GO run -buildvcs=false ./demo -bin "$BIN" "$@"
