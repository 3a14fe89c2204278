package apply

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"

	"github.com/vabc-go/vabc/internal/testtool"
	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/payload"
	"github.com/vabc-go/vabc/update_engine/payload/payloadtest"
	"github.com/vabc-go/vabc/update_engine/verity"
)

const bs = 4096

func img(blocks int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, blocks*bs)
	for i := range b {
		b[i] = byte(rng.IntN(8)) // compressible
	}
	return b
}

func cli(t *testing.T, data []byte, name string, args ...string) []byte {
	t.Helper()
	testtool.Need(t, name)
	c := exec.Command(name, args...)
	c.Stdin = bytes.NewReader(data)
	out, err := c.Output()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func op(t metadata.InstallOperation_Type, dst []*metadata.Extent) *metadata.InstallOperation {
	return &metadata.InstallOperation{Type: t.Enum(), DstExtents: dst}
}

func openRaw(t *testing.T, raw []byte) *payload.Payload {
	t.Helper()
	path := filepath.Join(t.TempDir(), "payload.bin")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := payload.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// fullPayload has two partitions covering every REPLACE variant, ZERO,
// DISCARD and multi-extent destinations.
func fullPayload(t *testing.T) (*payloadtest.Builder, map[string][]byte) {
	b := payloadtest.New(bs, 0)
	sys := img(32, 1)
	copy(sys[20*bs:24*bs], make([]byte, 4*bs)) // zero blocks
	copy(sys[24*bs:26*bs], make([]byte, 2*bs)) // discard blocks
	zw, _ := zstd.NewWriter(nil)
	b.AddOp("system", op(metadata.InstallOperation_REPLACE, payloadtest.Ext(0, 4)), sys[0:4*bs])
	b.AddOp("system", op(metadata.InstallOperation_REPLACE_BZ, payloadtest.Ext(4, 4)), cli(t, sys[4*bs:8*bs], "bzip2", "-c"))
	b.AddOp("system", op(metadata.InstallOperation_REPLACE_XZ, payloadtest.Ext(8, 4)), cli(t, sys[8*bs:12*bs], "xz", "-c", "--check=none"))
	b.AddOp("system", op(metadata.InstallOperation_REPLACE_XZ, payloadtest.Ext(12, 4)), cli(t, sys[12*bs:16*bs], "xz", "-c", "--x86", "--lzma2"))
	// Multi-extent: blocks 16..17 and 30..31 from one blob.
	multi := append(append([]byte{}, sys[16*bs:18*bs]...), sys[30*bs:32*bs]...)
	b.AddOp("system", op(metadata.InstallOperation_REPLACE_ZSTD, payloadtest.Ext(16, 2, 30, 2)), zw.EncodeAll(multi, nil))
	b.AddOp("system", op(metadata.InstallOperation_REPLACE, payloadtest.Ext(18, 2)), sys[18*bs:20*bs])
	b.AddOp("system", op(metadata.InstallOperation_ZERO, payloadtest.Ext(20, 4)), nil)
	b.AddOp("system", op(metadata.InstallOperation_DISCARD, payloadtest.Ext(24, 2)), nil)
	b.AddOp("system", op(metadata.InstallOperation_REPLACE, payloadtest.Ext(26, 4)), sys[26*bs:30*bs])
	payloadtest.SetInfo(b.Partition("system"), sys, nil)
	boot := img(3, 2)
	b.AddOp("boot", op(metadata.InstallOperation_REPLACE, payloadtest.Ext(0, 3)), boot)
	payloadtest.SetInfo(b.Partition("boot"), boot, nil)
	return b, map[string][]byte{"system": sys, "boot": boot}
}

func checkOut(t *testing.T, dir string, want map[string][]byte) {
	t.Helper()
	for name, w := range want {
		got, err := os.ReadFile(filepath.Join(dir, name+".img"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, w) {
			t.Fatalf("%s.img differs", name)
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("temporary file %s left behind", e.Name())
		}
	}
}

func TestExtractFull(t *testing.T) {
	b, want := fullPayload(t)
	p := openRaw(t, b.Build())
	for _, threads := range []int{1, 2, 8} {
		for _, memLimit := range []int64{0, 1} { // 1 byte: every op runs alone
			out := t.TempDir()
			var last atomic.Int64
			res, err := Extract(t.Context(), p, Options{OutDir: out, Threads: threads, MemoryLimit: memLimit,
				Progress: func(done, total int64) {
					for v := last.Load(); done > v && !last.CompareAndSwap(v, done); v = last.Load() {
					}
				}})
			if err != nil {
				t.Fatal(err)
			}
			checkOut(t, out, want)
			if len(res) != 2 || !res[0].Verified || !res[1].Verified {
				t.Fatalf("results %+v", res)
			}
			if last.Load() != int64(35*bs) {
				t.Fatalf("progress ended at %d", last.Load())
			}
		}
	}
}

func TestExtractSubsetAndZip(t *testing.T) {
	b, want := fullPayload(t)
	raw := b.Build()
	// An OTA zip with payload.bin stored, as ota_from_target_files writes it.
	zipPath := filepath.Join(t.TempDir(), "ota.zip")
	writeZip(t, zipPath, raw)
	p, err := payload.Open(zipPath)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.ZipOffset == 0 {
		t.Fatal("zip offset not found")
	}
	out := t.TempDir()
	if _, err := Extract(t.Context(), p, Options{OutDir: out, Partitions: []string{"boot"}}); err != nil {
		t.Fatal(err)
	}
	checkOut(t, out, map[string][]byte{"boot": want["boot"]})
	if _, err := os.Stat(filepath.Join(out, "system.img")); err == nil {
		t.Fatal("unselected partition written")
	}
	if _, err := Extract(t.Context(), p, Options{OutDir: out, Partitions: []string{"vendor"}}); err == nil {
		t.Fatal("unknown partition accepted")
	}
}

// deltaPayload: SOURCE_COPY with repeated source blocks, SOURCE_BSDIFF and
// BROTLI_BSDIFF (raw BSDF2), ZERO, REPLACE, and verity regeneration.
func deltaPayload(t *testing.T, verityOn bool) (*payloadtest.Builder, []byte, []byte) {
	old := img(40, 3)
	newImg := make([]byte, 48*bs)
	b := payloadtest.New(bs, 6)
	// SOURCE_COPY: (5,2),(6,1),(6,1) -> (0,4)
	src := payloadtest.Ext(5, 2, 6, 1, 6, 1)
	var sc []byte
	for _, blk := range []int{5, 6, 6, 6} {
		sc = append(sc, old[blk*bs:(blk+1)*bs]...)
	}
	copy(newImg, sc)
	h := sha256.Sum256(sc)
	o := op(metadata.InstallOperation_SOURCE_COPY, payloadtest.Ext(0, 4))
	o.SrcExtents, o.SrcSha256Hash = src, h[:]
	b.AddOp("vendor", o, nil)
	// Bsdiff ops: new blocks = old blocks 10..13 with edits.
	for i, typ := range []metadata.InstallOperation_Type{metadata.InstallOperation_SOURCE_BSDIFF, metadata.InstallOperation_BROTLI_BSDIFF} {
		so := 10 + 4*i
		nd := append([]byte{}, old[so*bs:(so+4)*bs]...)
		for k := 0; k < len(nd); k += 101 {
			nd[k] ^= 0x33
		}
		dst := payloadtest.Ext(uint64(4+4*i), 2, uint64(30+2*i), 2)
		scatter(newImg, nd, dst)
		patch := rawPatch(old[so*bs:(so+4)*bs], nd)
		o := op(typ, dst)
		o.SrcExtents = payloadtest.Ext(uint64(so), 4)
		h := sha256.Sum256(old[so*bs : (so+4)*bs])
		o.SrcSha256Hash = h[:]
		b.AddOp("vendor", o, patch)
	}
	b.AddOp("vendor", op(metadata.InstallOperation_ZERO, payloadtest.Ext(12, 4)), nil)
	fresh := img(14, 4)
	copy(newImg[16*bs:], fresh)
	b.AddOp("vendor", op(metadata.InstallOperation_REPLACE, payloadtest.Ext(16, 14)), fresh)
	copy(newImg[34*bs:], old[20*bs:26*bs])
	o = op(metadata.InstallOperation_SOURCE_COPY, payloadtest.Ext(34, 6))
	o.SrcExtents = payloadtest.Ext(20, 6)
	b.AddOp("vendor", o, nil)
	pu := b.Partition("vendor")
	if verityOn {
		// data = blocks [0,40), tree at [40,42), FEC over [0,42) at [42,44).
		pu.HashTreeDataExtent = payloadtest.Ext(0, 40)[0]
		pu.HashTreeExtent = payloadtest.Ext(40, 2)[0]
		pu.HashTreeAlgorithm = proto.String("sha256")
		pu.HashTreeSalt = []byte("salt")
		pu.FecDataExtent = payloadtest.Ext(0, 42)[0]
		pu.FecExtent = payloadtest.Ext(42, 2)[0]
		pu.FecRoots = proto.Uint32(2)
		m := mem(newImg)
		if _, err := verity.BuildHashTree(m, bs, "sha256", []byte("salt"), verity.Extent{Start: 0, Num: 40}, verity.Extent{Start: 40, Num: 2}); err != nil {
			t.Fatal(err)
		}
		if err := verity.EncodeFEC(m, bs, 2, verity.Extent{Start: 0, Num: 42}, verity.Extent{Start: 42, Num: 2}); err != nil {
			t.Fatal(err)
		}
	}
	payloadtest.SetInfo(pu, newImg, old)
	return b, old, newImg
}

type mem []byte

func (m mem) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m[off:]), nil }
func (m mem) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }

func scatter(img, data []byte, dst []*metadata.Extent) {
	for _, e := range dst {
		n := int(e.GetNumBlocks()) * bs
		copy(img[int(e.GetStartBlock())*bs:], data[:n])
		data = data[n:]
	}
}

// rawPatch makes a BSDF2 patch with uncompressed streams: one diff run.
func rawPatch(old, nw []byte) []byte {
	put := func(b []byte, v int64) []byte {
		for i := 0; i < 8; i++ {
			b = append(b, byte(v>>(8*i)))
		}
		return b
	}
	var ctrl []byte
	ctrl = put(ctrl, int64(len(nw)))
	ctrl = put(ctrl, 0)
	ctrl = put(ctrl, 0)
	diff := make([]byte, len(nw))
	for i := range nw {
		diff[i] = nw[i] - old[i]
	}
	p := []byte("BSDF2\x00\x00\x00")
	p = put(p, int64(len(ctrl)))
	p = put(p, int64(len(diff)))
	p = put(p, int64(len(nw)))
	return append(append(p, ctrl...), diff...)
}

func TestExtractDelta(t *testing.T) {
	for _, verityOn := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "verity"}[verityOn], func(t *testing.T) {
			b, old, want := deltaPayload(t, verityOn)
			p := openRaw(t, b.Build())
			oldDir, out := t.TempDir(), t.TempDir()
			os.WriteFile(filepath.Join(oldDir, "vendor.img"), old, 0o644)
			if _, err := Extract(t.Context(), p, Options{OutDir: out}); err == nil || !strings.Contains(err.Error(), "--old") {
				t.Fatalf("delta without sources: %v", err)
			}
			res, err := Extract(t.Context(), p, Options{OutDir: out, OldDir: oldDir, Threads: 3})
			if err != nil {
				t.Fatal(err)
			}
			checkOut(t, out, map[string][]byte{"vendor": want})
			if res[0].Verity != verityOn || !res[0].Verified {
				t.Fatalf("result %+v", res[0])
			}
		})
	}
}

// TestFailuresLeaveNothing: every failure mode removes the temporary file
// and never creates <partition>.img.
func TestFailuresLeaveNothing(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(b *payloadtest.Builder, old []byte) []byte // returns old image to use
		want   error
		msg    string
	}{
		{"new-hash", func(b *payloadtest.Builder, old []byte) []byte {
			b.Partition("vendor").NewPartitionInfo.Hash[0] ^= 1
			return old
		}, ErrVerify, "new_partition_info.hash"},
		{"src-hash", func(b *payloadtest.Builder, old []byte) []byte {
			o := append([]byte{}, old...)
			o[5*bs] ^= 1
			return o
		}, nil, "src_sha256_hash"},
		{"data-hash", func(b *payloadtest.Builder, old []byte) []byte {
			b.Partition("vendor").Operations[1].DataSha256Hash[3] ^= 1
			return old
		}, nil, "partition vendor op 1 (SOURCE_BSDIFF): data_sha256_hash"},
		{"zucchini", func(b *payloadtest.Builder, old []byte) []byte {
			b.Partition("vendor").Operations[2].Type = metadata.InstallOperation_ZUCCHINI.Enum()
			return old
		}, ErrUnsupported, "unsupported op ZUCCHINI in partition vendor op 2"},
		{"unknown-op", func(b *payloadtest.Builder, old []byte) []byte {
			b.Partition("vendor").Operations[3].Type = metadata.InstallOperation_Type(42).Enum()
			return old
		}, nil, "unknown op type 42"},
		{"short-source", func(b *payloadtest.Builder, old []byte) []byte { return old[:20*bs] }, nil, "source"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, old, _ := deltaPayload(t, false)
			old = tt.mutate(b, old)
			raw := b.Build()
			oldDir, out := t.TempDir(), t.TempDir()
			os.WriteFile(filepath.Join(oldDir, "vendor.img"), old, 0o644)
			path := filepath.Join(t.TempDir(), "payload.bin")
			os.WriteFile(path, raw, 0o644)
			p, err := payload.Open(path)
			if err == nil {
				defer p.Close()
				_, err = Extract(t.Context(), p, Options{OutDir: out, OldDir: oldDir, Threads: 2})
			}
			if err == nil {
				t.Fatal("no error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %q does not mention %q", err, tt.msg)
			}
			ents, _ := os.ReadDir(out)
			if len(ents) != 0 {
				t.Fatalf("left behind: %v", ents)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	b, _ := fullPayload(t)
	p := openRaw(t, b.Build())
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	out := t.TempDir()
	if _, err := Extract(ctx, p, Options{OutDir: out}); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v", err)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}

// TestHostileNames: partition names come from the manifest and must not
// escape the output directory.
func TestHostileNames(t *testing.T) {
	for _, name := range []string{"../escape", "a/b", "..", "."} {
		t.Run(name, func(t *testing.T) {
			b := payloadtest.New(bs, 0)
			b.AddOp(name, op(metadata.InstallOperation_REPLACE, payloadtest.Ext(0, 1)), make([]byte, bs))
			p := openRaw(t, b.Build())
			out := t.TempDir()
			if _, err := Extract(t.Context(), p, Options{OutDir: filepath.Join(out, "x")}); err == nil || !strings.Contains(err.Error(), "plain file name") {
				t.Fatalf("error %v", err)
			}
			if ents, _ := os.ReadDir(out); len(ents) != 0 {
				t.Fatalf("created %v", ents)
			}
		})
	}
}
