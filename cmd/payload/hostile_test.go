package main

import (
	"bytes"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ulikunitz/xz"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/payload/payloadtest"
)

var updateHostile = flag.Bool("update", false, "rewrite testdata/hostile from the generators")

// hostileDir holds the crafted payloads small enough to commit (≤ 64 KiB);
// larger ones are generated into a temp dir by the same code.
const hostileDir = "testdata/hostile"

const maxCommitted = 64 << 10

// hostileCase is one crafted payload, the command run on it and the
// expected outcome.
type hostileCase struct {
	name string
	gen  func() []byte
	old  map[string][]byte // old images (delta payloads)
	args []string          // command and flags; -o, --old and the payload are added
	want string            // error fragment; "" means success
}

var (
	u64 = proto.Uint64
	rep = bytes.Repeat
)

func op(t metadata.InstallOperation_Type, dst ...uint64) *metadata.InstallOperation {
	return &metadata.InstallOperation{Type: t.Enum(), DstExtents: payloadtest.Ext(dst...)}
}

// full builds a one-partition full payload "p" of n blocks written by one
// REPLACE op, then lets edit change it.
func full(n int, edit func(b *payloadtest.Builder, pu *metadata.PartitionUpdate)) func() []byte {
	return func() []byte {
		b := payloadtest.New(4096, 0)
		img := rep([]byte{0x5a}, n*4096)
		b.AddOp("p", op(metadata.InstallOperation_REPLACE, 0, uint64(n)), img)
		pu := b.Partition("p")
		payloadtest.SetInfo(pu, img, nil)
		if edit != nil {
			edit(b, pu)
		}
		return b.Build()
	}
}

// delta builds a minor-8 delta of partition "p" (old: 4 blocks of 0x11)
// copying the old image, then lets edit change it.
func delta(edit func(b *payloadtest.Builder, pu *metadata.PartitionUpdate)) func() []byte {
	return func() []byte {
		b := payloadtest.New(4096, 8)
		old := rep([]byte{0x11}, 4*4096)
		o := op(metadata.InstallOperation_SOURCE_COPY, 0, 4)
		o.SrcExtents = payloadtest.Ext(0, 4)
		b.AddOp("p", o, nil)
		pu := b.Partition("p")
		payloadtest.SetInfo(pu, old, old)
		if edit != nil {
			edit(b, pu)
		}
		return b.Build()
	}
}

var oldP = map[string][]byte{"p": rep([]byte{0x11}, 4*4096)}

// rawManifest wraps manifest bytes in a header (no signature, no blobs).
func rawManifest(m []byte) []byte {
	var h [24]byte
	copy(h[:], "CrAU")
	h[11] = 2
	for i := range 8 {
		h[12+i] = byte(uint64(len(m)) >> (56 - 8*i))
	}
	return append(h[:], m...)
}

// emptyExtents is a manifest of one op with n empty dst extents (2 bytes
// each on disk, ~100 bytes each decoded).
func emptyExtents(n int) func() []byte {
	return func() []byte {
		var opb []byte
		opb = protowire.AppendTag(opb, 1, protowire.VarintType)
		opb = protowire.AppendVarint(opb, uint64(metadata.InstallOperation_ZERO))
		for range n {
			opb = append(opb, 0x32, 0x00) // field 6 (dst_extents), length 0
		}
		var pb []byte
		pb = protowire.AppendTag(pb, 1, protowire.BytesType)
		pb = protowire.AppendString(pb, "p")
		pb = protowire.AppendTag(pb, 8, protowire.BytesType)
		pb = protowire.AppendBytes(pb, opb)
		var m []byte
		m = protowire.AppendTag(m, 3, protowire.VarintType) // block_size
		m = protowire.AppendVarint(m, 4096)
		m = protowire.AppendTag(m, 13, protowire.BytesType)
		m = protowire.AppendBytes(m, pb)
		return rawManifest(m)
	}
}

func xzBomb(n int) []byte {
	var buf bytes.Buffer
	w, err := xz.NewWriter(&buf)
	if err != nil {
		panic(err)
	}
	zero := make([]byte, 1<<20)
	for range n >> 20 {
		w.Write(zero)
	}
	w.Close()
	return buf.Bytes()
}

func hostileCases() []hostileCase {
	ok := []string{"extract"}
	cow := []string{"apply-cow"}
	return []hostileCase{
		{"ok-full", full(4, nil), nil, ok, ""},
		{"ok-full-cow", full(4, nil), nil, cow, ""},
		{"ok-delta-cow", delta(nil), oldP, cow, ""},
		{"dst-2p40-blocks", full(1, func(b *payloadtest.Builder, pu *metadata.PartitionUpdate) {
			pu.NewPartitionInfo.Size = nil
			b.AddOp("p", op(metadata.InstallOperation_ZERO, 1, 1<<40), nil)
		}), nil, cow, "size 4503599627374592 bytes exceeds the limit"},
		{"dst-2p40-in-small-partition", full(1, func(b *payloadtest.Builder, pu *metadata.PartitionUpdate) {
			b.AddOp("p", op(metadata.InstallOperation_ZERO, 1, 1<<40), nil)
		}), nil, cow, "op 1 (ZERO): dst extent (1,1099511627776) beyond the partition's 1 blocks"},
		{"new-size-1TiB", full(1, func(b *payloadtest.Builder, pu *metadata.PartitionUpdate) {
			pu.NewPartitionInfo.Size = u64(1 << 40)
		}), nil, ok, "size 1099511627776 bytes exceeds the limit of 68719476736 bytes"},
		{"zero-200k-ops-800GB", full(1, func(b *payloadtest.Builder, pu *metadata.PartitionUpdate) {
			const n = 200_000
			per := uint64(800<<30) / 4096 / n
			for i := range uint64(n) {
				b.AddOp("p", op(metadata.InstallOperation_ZERO, 1+i*per, per), nil)
			}
			pu.NewPartitionInfo.Size = nil
		}), nil, ok, "bytes exceeds the limit of 68719476736 bytes"},
		{"hash-tree-2p26-blocks", delta(func(b *payloadtest.Builder, pu *metadata.PartitionUpdate) {
			pu.HashTreeDataExtent = payloadtest.Ext(0, 1<<26)[0]
			pu.HashTreeExtent = payloadtest.Ext(1<<26, 1<<19)[0]
			pu.HashTreeAlgorithm = proto.String("sha256")
		}), oldP, ok, "hash_tree_data_extent (0,67108864) beyond the partition's 4 blocks"},
		{"hash-tree-2p26-no-size", delta(func(b *payloadtest.Builder, pu *metadata.PartitionUpdate) {
			pu.NewPartitionInfo.Size = nil
			pu.HashTreeDataExtent = payloadtest.Ext(0, 1<<26)[0]
			pu.HashTreeExtent = payloadtest.Ext(1<<26, 1<<19)[0]
			pu.HashTreeAlgorithm = proto.String("sha256")
		}), oldP, cow, "exceeds the limit of 68719476736 bytes"},
		{"manifest-60MiB-empty-extents", emptyExtents(30 << 20), nil, ok, "manifest holds more than 2097152 messages"},
		{"full-minor-99", full(1, func(b *payloadtest.Builder, pu *metadata.PartitionUpdate) {
			b.Manifest.MinorVersion = proto.Uint32(99)
		}), nil, ok, "full payload (no old_partition_info, not partial_update) with minor_version 99, want 0"},
		{"delta-minor-1", delta(func(b *payloadtest.Builder, pu *metadata.PartitionUpdate) {
			b.Manifest.MinorVersion = proto.Uint32(1)
		}), oldP, ok, "delta payload with minor_version 1, supported 2..10"},
		{"delta-minor-11", delta(func(b *payloadtest.Builder, pu *metadata.PartitionUpdate) {
			b.Manifest.MinorVersion = proto.Uint32(11)
		}), oldP, cow, "delta payload with minor_version 11, supported 2..10"},
		{"unknown-op-selected", twoParts, nil, []string{"extract", "-p", "bad"}, "partition bad op 1 (type 77): unknown op type 77"},
		{"unknown-op-other-partition", twoParts, nil, []string{"extract", "-p", "good"}, ""},
		{"unknown-op-other-partition-cow", twoParts, nil, []string{"apply-cow", "-p", "good"}, ""},
		{"unknown-op-all", twoParts, nil, ok, "partition bad op 1 (type 77)"},
		{"all-hashes-stripped", full(2, func(b *payloadtest.Builder, pu *metadata.PartitionUpdate) {
			pu.Operations[0].DataSha256Hash = nil
			pu.NewPartitionInfo.Hash = nil
		}), nil, ok, "operation has data but no data_sha256_hash"},
		{"op-hash-wrong", full(2, func(b *payloadtest.Builder, pu *metadata.PartitionUpdate) {
			pu.Operations[0].DataSha256Hash = rep([]byte{7}, 32)
		}), nil, cow, "hash mismatch"},
		{"src-beyond-old", delta(func(b *payloadtest.Builder, pu *metadata.PartitionUpdate) {
			pu.Operations[0].SrcExtents = payloadtest.Ext(1<<30, 4)
		}), oldP, cow, "src extent (1073741824,4) beyond the old partition's 4 blocks"},
		{"merge-op-huge", delta(func(b *payloadtest.Builder, pu *metadata.PartitionUpdate) {
			pu.MergeOperations = []*metadata.CowMergeOperation{{Type: metadata.CowMergeOperation_COW_COPY.Enum(),
				SrcExtent: payloadtest.Ext(0, 1<<31)[0], DstExtent: payloadtest.Ext(1, 1<<31)[0]}}
		}), oldP, cow, "merge op 0: dst extent (1,2147483648) beyond the partition's 4 blocks"},
		{"many-merge-ops", delta(func(b *payloadtest.Builder, pu *metadata.PartitionUpdate) {
			for range 3 {
				pu.MergeOperations = append(pu.MergeOperations, &metadata.CowMergeOperation{Type: metadata.CowMergeOperation_COW_COPY.Enum(),
					SrcExtent: payloadtest.Ext(0, 2)[0], DstExtent: payloadtest.Ext(1, 2)[0]})
			}
		}), oldP, cow, "merge operations cover 6 blocks, more than the partition's 4"},
		{"xz-bomb-64MiB-into-1-block", func() []byte {
			b := payloadtest.New(4096, 0)
			img := make([]byte, 4096)
			b.AddOp("p", op(metadata.InstallOperation_REPLACE_XZ, 0, 1), xzBomb(64<<20))
			payloadtest.SetInfo(b.Partition("p"), img, nil)
			return b.Build()
		}, nil, ok, "output exceeds the 4096-byte destination"},
		{"xz-bomb-cow", func() []byte {
			b := payloadtest.New(4096, 0)
			img := make([]byte, 4096)
			b.AddOp("p", op(metadata.InstallOperation_REPLACE_XZ, 0, 1), xzBomb(64<<20))
			payloadtest.SetInfo(b.Partition("p"), img, nil)
			return b.Build()
		}, nil, cow, "output exceeds the 4096-byte destination"},
		{"xz-300MiB-op-extract", bigXZ, nil, ok, ""},
		{"xz-300MiB-op-cow", bigXZ, nil, cow, "exceeds the 268435456-byte per-operation buffer"},
		{"xz-200MiB-op-cow", xzOp(200 << 20), nil, cow, ""}, // the largest op AOSP's generator makes, buffered whole

		{"block-size-3000", func() []byte {
			b := full(1, func(b *payloadtest.Builder, pu *metadata.PartitionUpdate) { b.Manifest.BlockSize = proto.Uint32(3000) })()
			return b
		}, nil, ok, "block_size not a power of two"},
		{"manifest-size-beyond-file", func() []byte {
			b := full(1, nil)()
			b[12] = 0x01 // manifest size ≥ 2^56
			return b
		}, nil, ok, "manifest size out of range"},
		{"data-beyond-file", full(1, func(b *payloadtest.Builder, pu *metadata.PartitionUpdate) {
			pu.Operations[0].DataOffset = u64(1 << 40)
		}), nil, ok, "outside the"},
		{"two-ops-one-block-cow", full(1, func(b *payloadtest.Builder, pu *metadata.PartitionUpdate) {
			b.AddOp("p", op(metadata.InstallOperation_ZERO, 0, 1), nil)
		}), nil, cow, "a COW cannot express that"},
		{"fec-beyond", delta(func(b *payloadtest.Builder, pu *metadata.PartitionUpdate) {
			pu.FecDataExtent = payloadtest.Ext(0, 4)[0]
			pu.FecExtent = payloadtest.Ext(1<<40, 2)[0]
			pu.FecRoots = proto.Uint32(2)
		}), oldP, cow, "fec_extent (1099511627776,2) beyond the partition's 4 blocks"},
	}
}

// twoParts: partition "good" is fine, partition "bad" has an op of unknown
// type 77 at index 1.
func twoParts() []byte {
	b := payloadtest.New(4096, 0)
	img := rep([]byte{1}, 4096)
	b.AddOp("good", op(metadata.InstallOperation_REPLACE, 0, 1), img)
	payloadtest.SetInfo(b.Partition("good"), img, nil)
	b.AddOp("bad", op(metadata.InstallOperation_REPLACE, 0, 1), img)
	b.AddOp("bad", op(metadata.InstallOperation_Type(77), 1, 1), nil)
	two := append(append([]byte(nil), img...), make([]byte, 4096)...)
	payloadtest.SetInfo(b.Partition("bad"), two, nil)
	return b.Build()
}

// maxRSSLimit is the bound for any crafted payload.
const maxRSSLimit = 300 << 20

// TestHostileCorpus runs the real binary on every crafted payload and
// checks the outcome, the time (< 5 s) and the peak RSS (≤ 300 MB). The
// committed files must match their generators (-update rewrites them).
func TestHostileCorpus(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	cases := hostileCases()
	bin := buildBinary(t)
	gen := t.TempDir()
	if *updateHostile {
		os.MkdirAll(hostileDir, 0o755)
	}
	var table strings.Builder
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Committed files are used as they are (-update regenerates
			// them); larger ones are generated into a temp dir.
			file := tc.name + ".bin"
			path := filepath.Join(hostileDir, file)
			raw, err := os.ReadFile(path)
			if err != nil || *updateHostile {
				raw = tc.gen()
				if len(raw) > maxCommitted {
					path = filepath.Join(gen, file)
				} else if !*updateHostile {
					t.Fatalf("%s is missing; run go test -run TestHostileCorpus -update", path)
				}
				if err := os.WriteFile(path, raw, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			dir := t.TempDir()
			args := append([]string(nil), tc.args...)
			args = append(args, "-o", filepath.Join(dir, "out"))
			if tc.old != nil {
				od := filepath.Join(dir, "old")
				os.Mkdir(od, 0o755)
				for n, img := range tc.old {
					os.WriteFile(filepath.Join(od, n+".img"), img, 0o644)
				}
				args = append(args, "--old", od)
			}
			args = append(args, path)
			cmd := exec.Command(bin, args...)
			rssFile := filepath.Join(dir, "rss")
			cmd.Env = append(os.Environ(), "VABC_PEAK_RSS_FILE="+rssFile)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			start := time.Now()
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("still running after 20 s: %s", stderr.String())
			}
			took := time.Since(start)
			rss := peakRSS(t, rssFile)
			msg := strings.TrimSpace(stderr.String())
			if tc.want == "" {
				if err != nil {
					t.Errorf("failed: %v: %s", err, msg)
				}
			} else {
				if err == nil {
					t.Errorf("succeeded, want an error with %q", tc.want)
				} else if !strings.Contains(msg, tc.want) {
					t.Errorf("error %q lacks %q", msg, tc.want)
				}
				if ents, _ := os.ReadDir(filepath.Join(dir, "out")); len(ents) > 0 && tc.args[0] == "extract" {
					t.Errorf("refused payload left %s in the output directory", ents[0].Name())
				}
			}
			// The 5 s limit is on CPU time: the machine running the tests
			// may give the process a fraction of a core (wall time logged).
			cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			if cpu > 5*time.Second {
				t.Errorf("took %v of CPU (%v wall), limit 5 s", cpu, took)
			}
			if rss > maxRSSLimit {
				t.Errorf("peak RSS %d MiB, limit %d MiB", rss>>20, maxRSSLimit>>20)
			}
			h := sha256.Sum256(raw)
			fmt.Fprintf(&table, "| %s | %s | %d | %.2f | %.2f | %d |\n", tc.name, tc.args[0], len(raw), cpu.Seconds(), took.Seconds(), rss>>20)
			t.Logf("%s: %d bytes (%x…), %v, peak RSS %d MiB: %s", tc.args[0], len(raw), h[:4], took, rss>>20, lastLine(msg))
		})
	}
	t.Logf("\n| case | command | bytes | CPU s | wall s | peak RSS MiB |\n|---|---|---|---|---|---|\n%s", table.String())
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// peakRSS reads the VmHWM the binary reported ("123456 kB").
func peakRSS(t *testing.T, path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no peak RSS report: %v", err)
	}
	var kb int64
	if _, err := fmt.Sscanf(string(b), "%d kB", &kb); err != nil {
		t.Fatalf("peak RSS report %q: %v", b, err)
	}
	return kb << 10
}

// bigXZ is a valid full payload whose one REPLACE_XZ op writes 300 MiB of
// zeros from a ~45 KB blob: extract streams it, apply-cow refuses to
// buffer it. Generated once (slow) and shared by two cases.
var bigXZ = sync.OnceValue(xzOp(300 << 20))

// xzOp is a full payload of one REPLACE_XZ op writing n zero bytes.
func xzOp(n int) func() []byte {
	return func() []byte {
		b := payloadtest.New(4096, 0)
		b.AddOp("p", op(metadata.InstallOperation_REPLACE_XZ, 0, uint64(n/4096)), xzBomb(n))
		h := sha256.New()
		zero := make([]byte, 1<<20)
		for range n >> 20 {
			h.Write(zero)
		}
		b.Partition("p").NewPartitionInfo = &metadata.PartitionInfo{Size: u64(uint64(n)), Hash: h.Sum(nil)}
		return b.Build()
	}
}
