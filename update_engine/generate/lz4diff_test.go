package generate

import (
	"bytes"
	"cmp"
	"testing"

	"github.com/vabc-go/vabc/internal/testtool"
	"github.com/vabc-go/vabc/testdata/imagegen"
	"github.com/vabc-go/vabc/update_engine/lz4diff"
	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/ops"
)

// TestLZ4DiffErofs: incrementals between two EROFS lz4hc images with
// LZ4Diff contain LZ4DIFF operations, are smaller than without, and apply
// (ops and the merge simulation) to the exact target.
func TestLZ4DiffErofs(t *testing.T) {
	testtool.Need(t, "mkfs.erofs")
	for _, tc := range []struct {
		name  string
		opts  []string
		compr string
	}{
		{"lz4hc", []string{"-zlz4hc"}, ""},
		{"lz4hc-6-bigpcluster", []string{"-zlz4hc,6", "-C16384"}, "lz4hc,6"},
		{"lz4-legacy", []string{"-zlz4", "-Elegacy-compress"}, "lz4"},
		{"lz4hc-12", []string{"-zlz4hc,12"}, "lz4hc,12"},
		{"apk", []string{"-zlz4hc"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, new, err := imagegen.ErofsPair(t.Context(), t.TempDir(), 5, 24, 96<<10, 8, tc.opts...)
			if tc.name == "apk" {
				ot, nt := imagegen.ApkTrees(3, 6)
				if old, err = imagegen.MakeErofs(t.Context(), t.TempDir(), ot, tc.opts...); err == nil {
					new, err = imagegen.MakeErofs(t.Context(), t.TempDir(), nt, tc.opts...)
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			sizes := map[bool]int{}
			for _, on := range []bool{true, false} {
				cfg := Config{MinorVersion: -1, Partitions: []Partition{{Name: "system", Old: old, New: new}}, Threads: 2,
					LZ4Diff: on, LZ4DiffCompression: tc.compr, VABC: &VABC{CowVersion: 3, Compression: "lz4", XOR: true}}
				res := generate(t, cfg)
				checkLayout(t, res, true)
				if got := applyPayload(t, res.Payload, map[string][]byte{"system": old}); !bytes.Equal(got["system"], new) {
					t.Fatalf("lz4diff=%v: incremental payload does not reproduce the image", on)
				}
				simulateMerge(t, res.Manifest.Partitions[0], old, new, 4096)
				n, postfix, puff := 0, 0, 0
				blobs := res.Payload[res.MetadataSize+res.MetadataSignatureSize:]
				for _, op := range res.Manifest.Partitions[0].Operations {
					if tp := op.GetType(); tp == metadata.InstallOperation_LZ4DIFF_BSDIFF || tp == metadata.InstallOperation_LZ4DIFF_PUFFDIFF {
						n++
						if tp == metadata.InstallOperation_LZ4DIFF_PUFFDIFF {
							puff++
						}
						h, err := lz4diff.ParseHeader(blobs[op.GetDataOffset() : op.GetDataOffset()+op.GetDataLength()])
						if err != nil {
							t.Fatal(err)
						}
						algo, level, _ := ParseLZ4DiffCompression(cmp.Or(tc.compr, DefaultLZ4DiffCompression))
						if h.Dst.Algo != algo || h.Dst.Level != level || h.Src.Algo != algo || !h.Dst.ZeroPadding != (tc.name == "lz4-legacy") {
							t.Fatalf("header src %v/%d dst %v/%d zero padding %v", h.Src.Algo, h.Src.Level, h.Dst.Algo, h.Dst.Level, h.Dst.ZeroPadding)
						}
						for _, b := range h.Dst.Blocks {
							if len(b.SHA256) != 32 {
								t.Fatal("destination block without sha256_hash")
							}
							if len(b.PostfixBspatch) > 0 {
								postfix++
							}
						}
					}
				}
				if on && n == 0 {
					t.Fatal("no LZ4DIFF op between two EROFS images with changed files")
				}
				if !on && n != 0 {
					t.Fatalf("%d LZ4DIFF ops without LZ4Diff", n)
				}
				if on && tc.name == "apk" && puff == 0 {
					t.Error("no LZ4DIFF_PUFFDIFF op for APKs with edited deflate entries")
				}
				if on && res.Manifest.GetMinorVersion() < 9 {
					t.Fatalf("LZ4DIFF ops at minor version %d", res.Manifest.GetMinorVersion())
				}
				sizes[on] = len(res.Payload)
				t.Logf("LZ4Diff=%v: %d bytes, %d LZ4DIFF ops (%d PUFFDIFF inside, %d postfix blocks), ops %v", on, len(res.Payload), n, puff, postfix, res.Stats[0].Ops)
			}
			if sizes[true] >= sizes[false] {
				t.Fatalf("with lz4diff %d bytes, without %d: not smaller", sizes[true], sizes[false])
			}
		})
	}
}

// TestErofsCompressionLevel: mkfs.erofs -zlz4hc uses LZ4HC level 9
// (liblz4's default) and -zlz4hc,N level N: re-compressing every pcluster
// of every file with that level (lz4diff.Compress, as a device does)
// reproduces the image's bytes, another level does not. -zlz4 is
// LZ4_compress_destSize. With a wrong level the generator still makes
// patches that reproduce the target, through postfix bspatches.
func TestErofsCompressionLevel(t *testing.T) {
	testtool.Need(t, "mkfs.erofs")
	ot, _ := imagegen.ErofsTrees(9, 12, 64<<10, 0)
	// The default is level 9: the image equals -zlz4hc,9's and not
	// -zlz4hc,12's.
	var imgs [3][]byte
	for i, o := range []string{"-zlz4hc", "-zlz4hc,9", "-zlz4hc,12"} {
		var err error
		if imgs[i], err = imagegen.MakeErofs(t.Context(), t.TempDir(), ot, o); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(imgs[0], imgs[1]) || bytes.Equal(imgs[0], imgs[2]) {
		t.Fatal("mkfs.erofs -zlz4hc is not -zlz4hc,9")
	}
	for _, tc := range []struct {
		opts         []string
		right, wrong string
	}{
		{[]string{"-zlz4hc"}, "lz4hc,9", "lz4hc,5"},
		{[]string{"-zlz4hc,4"}, "lz4hc,4", "lz4hc,9"},
		{[]string{"-zlz4hc", "-C16384"}, "lz4hc", "lz4hc,3"},
		{[]string{"-zlz4"}, "lz4", "lz4hc,9"},
		{[]string{"-zlz4hc,12"}, "lz4hc,12", "lz4hc,9"},
	} {
		img, err := imagegen.MakeErofs(t.Context(), t.TempDir(), ot, tc.opts...)
		if err != nil {
			t.Fatal(err)
		}
		for _, comp := range []string{tc.right, tc.wrong} {
			algo, level, err := ParseLZ4DiffCompression(comp)
			if err != nil {
				t.Fatal(err)
			}
			files, order := erofsFiles(img, 4096, algo, level)
			if len(order) < 6 {
				t.Fatalf("%v: %d compressed files", tc.opts, len(order))
			}
			same, blocks := 0, 0
			for _, path := range order {
				f := files[path]
				data := f.data(img, 4096)
				u, err := lz4diff.Decompress(data, &f.info)
				if err != nil {
					t.Fatalf("%v %s: %v", tc.opts, path, err)
				}
				re, err := lz4diff.Compress(u, &f.info)
				if err != nil {
					t.Fatal(err)
				}
				off := uint64(0)
				for _, b := range f.info.Blocks {
					blocks++
					if bytes.Equal(re[off:off+b.CompressedLength], data[off:off+b.CompressedLength]) {
						same++
					}
					off += b.CompressedLength
				}
				if comp == tc.wrong {
					// the patch still reproduces the file
					c := Config{BrotliQuality: 9}
					patch, _ := c.lz4diffPatch(data, data, &f.info, &f.info)
					if got, err := lz4diff.Apply(data, patch); err != nil || !bytes.Equal(got, data) {
						t.Fatalf("%v %s with %s: patch does not reproduce the file (%v)", tc.opts, path, comp, err)
					}
				}
			}
			t.Logf("mkfs.erofs %v, re-compressed as %s: %d of %d blocks identical", tc.opts, comp, same, blocks)
			if comp == tc.right && same != blocks {
				t.Errorf("mkfs.erofs %v re-compressed as %s: %d of %d blocks identical", tc.opts, comp, same, blocks)
			}
			if comp == tc.wrong && same == blocks {
				t.Errorf("mkfs.erofs %v re-compressed as %s: every block identical, the test cannot tell levels apart", tc.opts, comp)
			}
		}
	}
}

// BenchmarkLZ4DiffApplyErofs: applying the LZ4DIFF operations of an
// incremental between two mkfs.erofs lz4hc images (decompress, bspatch,
// re-compress with LZ4HC-9, check); bytes are the operations' destination
// bytes.
func BenchmarkLZ4DiffApplyErofs(b *testing.B) {
	testtool.Need(b, "mkfs.erofs")
	old, new, err := imagegen.ErofsPair(b.Context(), b.TempDir(), 11, 32, 256<<10, 16, "-zlz4hc")
	if err != nil {
		b.Fatal(err)
	}
	res, err := Generate(b.Context(), Config{MinorVersion: -1, Partitions: []Partition{{Name: "system", Old: old, New: new}}, Threads: 2, LZ4Diff: true})
	if err != nil {
		b.Fatal(err)
	}
	blobs := res.Payload[res.MetadataSize+res.MetadataSignatureSize:]
	var lz []*metadata.InstallOperation
	var n int64
	for _, op := range res.Manifest.Partitions[0].Operations {
		if op.GetType() == metadata.InstallOperation_LZ4DIFF_BSDIFF || op.GetType() == metadata.InstallOperation_LZ4DIFF_PUFFDIFF {
			lz = append(lz, op)
			for _, e := range op.DstExtents {
				n += int64(e.GetNumBlocks()) * 4096
			}
		}
	}
	if len(lz) == 0 {
		b.Fatal("no LZ4DIFF operations")
	}
	img := &memImage{b: make([]byte, len(new))}
	env := ops.Env{BlockSize: 4096, Source: bytes.NewReader(old), Target: img}
	b.SetBytes(n)
	b.ResetTimer()
	for range b.N {
		for _, op := range lz {
			if err := ops.Execute(op, blobs[op.GetDataOffset():op.GetDataOffset()+op.GetDataLength()], env); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// TestLZ4DiffNotErofs: LZ4Diff on images that are not EROFS changes nothing
// but the minor version (9).
func TestLZ4DiffNotErofs(t *testing.T) {
	old, new, err := imagegen.Raw(imagegen.Mixed, 3, 48)
	if err != nil {
		t.Fatal(err)
	}
	res := generate(t, Config{MinorVersion: -1, Partitions: []Partition{{Name: "system", Old: old, New: new}}, LZ4Diff: true})
	if got := applyPayload(t, res.Payload, map[string][]byte{"system": old}); !bytes.Equal(got["system"], new) {
		t.Fatal("payload does not reproduce the image")
	}
	if res.Manifest.GetMinorVersion() != 9 {
		t.Fatalf("minor version %d", res.Manifest.GetMinorVersion())
	}
	for _, op := range res.Manifest.Partitions[0].Operations {
		if op.GetType() == metadata.InstallOperation_LZ4DIFF_BSDIFF {
			t.Fatal("LZ4DIFF op for a raw image")
		}
	}
	if _, err := Generate(t.Context(), Config{MinorVersion: 8, Partitions: []Partition{{Name: "system", Old: old, New: new}}, LZ4Diff: true}); err == nil {
		t.Fatal("LZ4Diff at minor 8 accepted")
	}
}
