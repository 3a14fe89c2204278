#!/usr/bin/env bash
# Installs everything vabc needs on a fresh Debian machine. Idempotent, and fast
# (a few seconds, no network) when everything is already there: apt runs only
# for missing packages, go install only for a missing or differently versioned
# tool, and the VM kernel is reused from e2e/cache. `make test` runs this first.
# VABC_DEPS_REFRESH=1 (make deps-refresh) asks apt for a newer Debian kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$EPOCHREALTIME

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

pkgs=(
	e2fsprogs      # mkfs.ext4 / debugfs for realistic test images
	erofs-utils    # mkfs.erofs: EROFS lz4hc images for the erofs parser and the --lz4diff round trips
	lz4 zstd brotli xz-utils gzip bzip2   # reference CLIs for make bench and codec interop tests
	python3 python3-lz4   # C liblz4 block API for the lz4 interop test
	liblz4-dev     # lz4hc.h + liblz4.so: the test-only C helper proving the Go LZ4 HC port bit-exact (lz4diff)
	liblzma-dev libssl-dev   # make bench only: the liblzma + OpenSSL SHA-256 stand-in for payload-dumper-go (bench/liblzmaref.go)
	bsdiff         # bsdiff/bspatch cross-checks of our BSDIFF40 encoder and patcher
	zip            # Info-ZIP archives for the puffin bit-exactness tests
	cryptsetup-bin # veritysetup: cross-check of the dm-verity hash tree
	protobuf-compiler     # protoc: the generated-code freshness test and make proto
	fuse3          # fusermount3 for the FUSE frontend
	qemu-system-x86 busybox-static cpio kmod   # VM integration tests
	dmsetup        # copied into the VM initramfs to cross-check kernel/dm
	make gcc libelf-dev bc flex bison     # building the dm-user kernel module
	dwarves        # pahole: building the module against the 6.12 backports headers (VABC_KERNEL=bpo)
)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

go mod download

# Go tools at pinned versions, installed only when absent or of another version.
GOBIN=$(go env GOBIN)
GOBIN=${GOBIN:-$(go env GOPATH)/bin}
STATICCHECK_VERSION=v0.8.2
PROTOC_GEN_GO_VERSION=v1.36.12
# tool_ok BIN VERSION ARGS...: BIN exists and its version output (ARGS) names VERSION
# (staticcheck prints "staticcheck 2026.2.2 (0.8.2)", protoc-gen-go "protoc-gen-go v1.36.12").
tool_ok() {
	local bin=$GOBIN/$1 want=${2#v}
	shift 2
	[ -x "$bin" ] && "$bin" "$@" 2>/dev/null | grep -qE "(^|[ (v])${want//./\\.}([ )]|$)"
}
tool_ok staticcheck "$STATICCHECK_VERSION" -version ||
	GOFLAGS=-buildvcs=false go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
tool_ok protoc-gen-go "$PROTOC_GEN_GO_VERSION" --version ||
	GOFLAGS=-buildvcs=false go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"

# The VM harness's kernel image and module headers (cached by version).
# Cached kernels are reused without asking apt unless VABC_DEPS_REFRESH=1.
if [ -x e2e/fetch-kernel.sh ]; then
	fetch=(env VABC_FETCH_IF_MISSING=1)
	[ "${VABC_DEPS_REFRESH:-}" = 1 ] && fetch=(env)
	"${fetch[@]}" bash e2e/fetch-kernel.sh
	# The 6.12 backports kernel: the module must build and pass on it too.
	# Its mirror is optional; vm-test says so when it is missing.
	VABC_KERNEL=bpo "${fetch[@]}" bash e2e/fetch-kernel.sh || echo "deps: warning: could not fetch the 6.12 backports kernel; make vm-test runs 6.1 only" >&2
fi
awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "deps: ok (%.1f s)\n", b - a }'
