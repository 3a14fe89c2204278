# vabc — see README.md. Two commands set everything up on a fresh Debian machine:
#   make demo    builds everything and runs the main job on built-in defaults
#   make test    runs every test (unit, fuzz seeds, crash tests, VM tests when qemu is present)
GO       ?= go
BIN      := $(CURDIR)/bin
GOBIN    := $(shell $(GO) env GOPATH)/bin
STATICCHECK := $(GOBIN)/staticcheck
export GOFLAGS := -buildvcs=false
export CGO_ENABLED := 0

.PHONY: all deps deps-refresh build android test unit-test vm-test vm-test-if-available lint fmt-check vet staticcheck bench demo fuzz proto clean

all: build

## deps: install everything a fresh Debian machine needs (apt packages, Go modules, linters, VM kernel);
## idempotent and well under a second when nothing is missing (make test runs it first)
deps:
	@bash scripts/deps.sh

## deps-refresh: deps, and ask apt whether Debian moved to a newer VM kernel
deps-refresh:
	VABC_DEPS_REFRESH=1 bash scripts/deps.sh

## build: static binaries into bin/
build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

## android: static linux/arm64 and linux/amd64 builds of every cmd/* binary (snapuserd, snapshotctl,
## cowctl, payload, vabc-init when present) into bin/linux-<arch>/; Android.bp installs the arm64
## snapuserd from there (module vabc_snapuserd, docs/DEVICE.md)
ANDROID_ARCHES ?= arm64 amd64
android:
	@for arch in $(ANDROID_ARCHES); do \
		out=$(BIN)/linux-$$arch; mkdir -p $$out; \
		GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags='-s -w' -o $$out/ ./cmd/... || exit 1; \
		echo "android: $$out: $$(cd $$out && ls | tr '\n' ' ')"; \
	done
	VABC_ANDROID_BIN=$(BIN) $(GO) test -count=1 -run 'TestAndroid' ./internal/layout

## test: deps, lint, all Go tests (fuzz seeds included), then the VM tests when qemu is installed
## (in CI, i.e. with CI set, or with VABC_REQUIRE_VM=1, a missing qemu or 6.12 kernel fails)
test: deps
	@$(MAKE) --no-print-directory lint unit-test
	@$(MAKE) --no-print-directory vm-test-if-available

VABC_REQUIRE_VM ?= $(if $(CI),1,0)
QEMU ?= qemu-system-x86_64
vm-test-if-available:
	@if [ -x e2e/run.sh ] && command -v $(QEMU) >/dev/null 2>&1; then \
		$(MAKE) vm-test; \
	elif [ "$(VABC_REQUIRE_VM)" = 1 ]; then \
		echo "vm-test: FAIL: $(QEMU) not installed, and VABC_REQUIRE_VM=1 (CI): the VM tests must run (make deps)"; exit 1; \
	else \
		echo "vm-test: skipped ($(QEMU) not installed; run make deps)"; \
	fi

unit-test:
	$(GO) test -count=1 -timeout 9m ./...

## vm-test: boot Debian's kernels in qemu (TCG) and run the device-mapper scenarios: the
## current bookworm kernel (6.1) and, when make deps could fetch it, the backports one (6.12).
## The multi-boot OTA scenarios (ota, power-cut, rollback: ~3 min) run on 6.1 only unless
## VABC_OTA_BPO=1, and so does snapuserd-hybrid unless VABC_VM_SKIP_BPO= (empty), to keep
## make test under 15 minutes on 2 cores.
VABC_OTA_BPO ?= 0
VABC_VM_SKIP_BPO ?= snapuserd-hybrid
vm-test: build
	bash e2e/run.sh
	@if [ -e e2e/cache/current-bpo.env ]; then VABC_KERNEL=bpo VABC_OTA=$(VABC_OTA_BPO) VABC_VM_SKIP="$(VABC_VM_SKIP_BPO)" bash e2e/run.sh; \
	elif [ "$(VABC_REQUIRE_VM)" = 1 ]; then \
		echo "vm-test: FAIL: the 6.12 backports kernel is not cached, and VABC_REQUIRE_VM=1 (CI) (make deps fetches it)"; exit 1; \
	else echo "vm-test: the 6.12 backports kernel is not cached (make deps fetches it); 6.12 not run"; fi

lint: fmt-check vet staticcheck

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	@if [ -x $(STATICCHECK) ]; then $(STATICCHECK) ./...; \
	else echo "staticcheck not installed (make deps installs it; make test runs deps first)"; exit 1; fi

## bench: measure against references in the same run and write docs/BENCHMARKS.md + docs/bench/*.png plots
bench: build
	$(GO) run ./bench -o docs/BENCHMARKS.md

## demo: the whole OTA story on generated images (payload → COW → snapuserd → merge with a
## SIGKILL → verified), in well under a minute, no root needed
demo:
	BIN=$(BIN) bash scripts/demo.sh

## fuzz: run every fuzz target for FUZZTIME (default 60s) each
FUZZTIME ?= 60s
fuzz:
	bash scripts/fuzz.sh $(FUZZTIME)

## proto: regenerate update_engine/metadata/update_metadata.pb.go (protoc from Debian + protoc-gen-go v1.36.12)
PROTOC_GEN_GO_VERSION := v1.36.12
proto:
	@command -v protoc >/dev/null 2>&1 || apt-get install -y protobuf-compiler
	@[ -x $(GOBIN)/protoc-gen-go ] && $(GOBIN)/protoc-gen-go --version | grep -q $(PROTOC_GEN_GO_VERSION) || \
		GOBIN=$(GOBIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	PATH=$(GOBIN):$$PATH protoc --go_out=. --go_opt=paths=source_relative update_engine/metadata/update_metadata.proto

clean:
	rm -rf $(BIN)
