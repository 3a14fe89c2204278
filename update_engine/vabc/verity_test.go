package vabc

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/testdata/imagegen"
	"github.com/vabc-go/vabc/update_engine/apply"
	"github.com/vabc-go/vabc/update_engine/generate"
	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/payload"
	"github.com/vabc-go/vabc/update_engine/payload/payloadtest"
	"github.com/vabc-go/vabc/update_engine/verity"
)

func withVerity(c *generate.Config) { c.Verity = &generate.Verity{Seed: "test"} }

// checkVerityManifest checks the generator's verity fields and that no
// install op writes the hash tree or FEC blocks.
func checkVerityManifest(t *testing.T, p *payload.Payload, full bool) {
	t.Helper()
	for _, pu := range p.Manifest.Partitions {
		name := pu.GetPartitionName()
		if full {
			if hasVerity(pu) {
				t.Errorf("%s: full payload carries verity fields", name)
			}
			continue
		}
		if !hasVerity(pu) || pu.GetHashTreeAlgorithm() != "sha256" || len(pu.HashTreeSalt) != 32 || pu.GetFecRoots() != 2 {
			t.Fatalf("%s: verity fields missing: %v", name, pu)
		}
		d, tr, fd, fe := pu.HashTreeDataExtent, pu.HashTreeExtent, pu.FecDataExtent, pu.FecExtent
		if d.GetStartBlock() != 0 || tr.GetStartBlock() != d.GetNumBlocks() || fd.GetNumBlocks() != d.GetNumBlocks()+tr.GetNumBlocks() ||
			fe.GetStartBlock() != fd.GetNumBlocks() || (fe.GetStartBlock()+fe.GetNumBlocks())*4096 != pu.GetNewPartitionInfo().GetSize() {
			t.Errorf("%s: layout data %v tree %v fec data %v fec %v size %d", name, d, tr, fd, fe, pu.GetNewPartitionInfo().GetSize())
		}
		for i, op := range pu.Operations {
			for _, e := range op.DstExtents {
				if e.GetStartBlock()+e.GetNumBlocks() > d.GetNumBlocks() {
					t.Errorf("%s op %d writes %v, past the data extent", name, i, e)
				}
			}
		}
	}
}

// TestVerityRoundTrip: payloads generated with verity (full and
// incremental) extract to the target images including hash tree and FEC, and
// apply-cow + merge gives the same images, for COW v2 and v3.
func TestVerityRoundTrip(t *testing.T) {
	pairs, err := imagegen.RawPairs(11, 40)
	if err != nil {
		t.Fatal(err)
	}
	pairs = pairs[:4]
	payloads := map[string]*testPayload{
		"full": makePayload(t, pairs, true, &generate.VABC{CowVersion: 2, Compression: "lz4"}, 32<<10, withVerity),
		"incr": makePayload(t, pairs, false, &generate.VABC{CowVersion: 2, Compression: "lz4", XOR: true}, 32<<10, withVerity),
	}
	for _, tc := range []struct {
		name, payload string
		opts          Options
	}{
		{"full-v2", "full", Options{}},
		{"full-v3", "full", Options{CowVersion: 3, CompressionFactor: 16 << 10}},
		{"incr-v2", "incr", Options{}},
		{"incr-v3", "incr", Options{CowVersion: 3, Compression: "zstd", CompressionFactor: 64 << 10}},
		{"incr-v2-none", "incr", Options{Compression: "none"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := payloads[tc.payload]
			full := tc.payload == "full"
			checkVerityManifest(t, tp.p, full)
			for name, img := range tp.new {
				if len(img)%4096 != 0 || len(img) <= 40*4096 {
					t.Fatalf("%s: target image of %d bytes has no verity region", name, len(img))
				}
			}
			opts := tc.opts
			opts.OutDir, opts.WrapFile = t.TempDir(), noSync
			if !full {
				opts.OldDir = tp.oldDir()
			}
			res, err := Write(t.Context(), tp.p, opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res {
				if !r.Verified {
					t.Errorf("%s: not verified", r.Name)
				}
				if est := tp.p.Partition(r.Name).GetEstimateCowSize(); est != 0 && uint64(r.Size) > est {
					t.Errorf("%s: COW %d bytes > estimate_cow_size %d", r.Name, r.Size, est)
				}
				if !full {
					// A label after the verity data.
					cr, err := cow.Open(r.Path, nil)
					if err != nil {
						t.Fatal(err)
					}
					want := uint64(r.Operations + 1)
					found := false
					for _, op := range cr.Ops() {
						found = found || (op.Type == cow.OpLabel && op.Source == want)
					}
					if !found && cr.Header().MajorVersion == 2 {
						t.Errorf("%s: no label %d after the verity data", r.Name, want)
					}
					cr.Close()
				}
			}
			tp.checkCOWs(t, opts.OutDir)
		})
	}
}

// TestVerityResume fails the COW writes of a verity partition at every
// point and checks that a rerun resumes (or restarts) to a correct COW.
func TestVerityResume(t *testing.T) {
	pairs, err := imagegen.RawPairs(5, 24)
	if err != nil {
		t.Fatal(err)
	}
	tp := makePayload(t, pairs[6:7], false, &generate.VABC{CowVersion: 2, Compression: "lz4", XOR: true}, 16<<10, withVerity)
	for _, v := range []uint32{2, 3} {
		// Count the writes of an uninterrupted run.
		var n atomic.Int64
		counting := func(f cow.File) cow.File {
			return &errFile{faultFile: faultFile{File: f, noSync: true, writes: &n}, failAt: 1 << 62}
		}
		if _, err := Write(t.Context(), tp.p, Options{OutDir: t.TempDir(), OldDir: tp.oldDir(), CowVersion: v, WrapFile: counting}); err != nil {
			t.Fatal(err)
		}
		total := n.Load()
		resumedAfterOps := 0
		for at := int64(1); at <= total; at++ {
			out := t.TempDir()
			failing := func(f cow.File) cow.File {
				return &errFile{faultFile: faultFile{File: f, noSync: true, writes: new(atomic.Int64)}, failAt: at}
			}
			_, err := Write(t.Context(), tp.p, Options{OutDir: out, OldDir: tp.oldDir(), CowVersion: v, WrapFile: failing})
			if !errors.Is(err, errInjected) {
				t.Fatalf("v%d write %d/%d: %v, want the injected error", v, at, total, err)
			}
			res, err := Write(t.Context(), tp.p, Options{OutDir: out, OldDir: tp.oldDir(), CowVersion: v, WrapFile: noSync})
			if err != nil {
				t.Fatalf("v%d after failing write %d: %v", v, at, err)
			}
			if l := res[0].ResumedAt; l != nil && *l >= uint64(res[0].Operations) {
				resumedAfterOps++
			}
			tp.checkCOWs(t, out)
		}
		if resumedAfterOps == 0 {
			t.Errorf("v%d: no run resumed at or after the last install op's label", v)
		}
	}
}

// verityImage builds data blocks + hash tree + FEC in memory.
type memImg []byte

func (m memImg) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m[off:]), nil }
func (m memImg) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }

// TestVerityHandMade: a hand-built payload (REPLACE over the data blocks,
// verity fields, hash tree and FEC left to the client). With the correct
// target hash both extract and apply-cow reproduce the image; when the target
// image has one hash-tree byte flipped, both fail the final hash check and
// leave nothing behind.
func TestVerityHandMade(t *testing.T) {
	const bs = 4096
	rng := rand.New(rand.NewPCG(3, 4))
	const data = 9
	tree := verity.TreeBlocks(data, bs, 32)
	fec := verity.FECSize(data+tree, bs, 2) / bs
	img := make(memImg, (data+tree+fec)*bs)
	for i := range data * bs {
		img[i] = byte(rng.IntN(7))
	}
	salt := []byte("salty")
	if _, err := verity.BuildHashTree(img, bs, "sha256", salt, verity.Extent{Start: 0, Num: data}, verity.Extent{Start: data, Num: uint64(tree)}); err != nil {
		t.Fatal(err)
	}
	if err := verity.EncodeFEC(img, bs, 2, verity.Extent{Start: 0, Num: uint64(data + tree)}, verity.Extent{Start: uint64(data + tree), Num: uint64(fec)}); err != nil {
		t.Fatal(err)
	}
	build := func(target []byte) *payload.Payload {
		b := payloadtest.New(bs, 8)
		// A delta by AOSP's rule (a full payload must be minor 0, and full
		// payloads never carry verity).
		b.Manifest.PartialUpdate = proto.Bool(true)
		b.AddOp("sys", &metadata.InstallOperation{Type: metadata.InstallOperation_REPLACE.Enum(), DstExtents: payloadtest.Ext(0, data)}, img[:data*bs])
		pu := b.Partition("sys")
		payloadtest.SetInfo(pu, target, nil)
		pu.HashTreeDataExtent = payloadtest.Ext(0, data)[0]
		pu.HashTreeExtent = payloadtest.Ext(data, uint64(tree))[0]
		pu.HashTreeAlgorithm = proto.String("sha256")
		pu.HashTreeSalt = salt
		pu.FecDataExtent = payloadtest.Ext(0, uint64(data+tree))[0]
		pu.FecExtent = payloadtest.Ext(uint64(data+tree), uint64(fec))[0]
		pu.FecRoots = proto.Uint32(2)
		path := filepath.Join(t.TempDir(), "payload.bin")
		if err := os.WriteFile(path, b.Build(), 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := payload.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	bad := append([]byte(nil), img...)
	bad[data*bs+5] ^= 0x10
	for _, tc := range []struct {
		name   string
		target []byte
		ok     bool
	}{
		{"good", img, true},
		{"tree-byte-flipped", bad, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := build(tc.target)
			ext := t.TempDir()
			_, err := apply.Extract(context.Background(), p, apply.Options{OutDir: ext, Threads: 1})
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				got, _ := os.ReadFile(filepath.Join(ext, "sys.img"))
				if !bytes.Equal(got, img) {
					t.Fatalf("extract differs at byte %d", firstDiff(got, img))
				}
			} else {
				if !errors.Is(err, apply.ErrVerify) {
					t.Fatalf("extract: %v, want apply.ErrVerify", err)
				}
				if _, err := os.Stat(filepath.Join(ext, "sys.img")); err == nil {
					t.Error("extract left sys.img behind after a hash mismatch")
				}
			}
			for _, v := range []uint32{2, 3} {
				out := t.TempDir()
				res, err := Write(t.Context(), p, Options{OutDir: out, CowVersion: v, Compression: "lz4", WrapFile: noSync})
				if !tc.ok {
					if !errors.Is(err, ErrVerify) {
						t.Fatalf("v%d: apply-cow: %v, want ErrVerify", v, err)
					}
					if _, err := os.Stat(filepath.Join(out, "sys.cow")); err == nil {
						t.Errorf("v%d: failed COW left behind", v)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if !res[0].Verified || res[0].ReplaceBlocks != int(data+tree+fec) {
					t.Errorf("v%d: %+v (want %d replace blocks)", v, res[0], data+tree+fec)
				}
				if got := mergeCOW(t, nil, int64(len(img)), res[0].Path); !bytes.Equal(got, img) {
					t.Fatalf("v%d: merged image differs at byte %d", v, firstDiff(got, img))
				}
			}
		})
	}
}
