package ops

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"

	"github.com/vabc-go/vabc/internal/testtool"
	"github.com/vabc-go/vabc/update_engine/bsdiff"
	"github.com/vabc-go/vabc/update_engine/liblz4"
	"github.com/vabc-go/vabc/update_engine/lz4diff"
	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/puffin"
)

const bs = 4096

type mem []byte

func (m mem) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m)) {
		return 0, errEOF
	}
	n := copy(p, m[off:])
	if n < len(p) {
		return n, errEOF
	}
	return n, nil
}

func (m mem) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > int64(len(m)) {
		return 0, errors.New("write past end")
	}
	return copy(m[off:], p), nil
}

var errEOF = errors.New("EOF")

func ext(pairs ...uint64) []*metadata.Extent {
	var out []*metadata.Extent
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, &metadata.Extent{StartBlock: proto.Uint64(pairs[i]), NumBlocks: proto.Uint64(pairs[i+1])})
	}
	return out
}

func randBytes(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.IntN(16)) // compressible
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

func hashOf(b []byte) []byte { h := sha256.Sum256(b); return h[:] }

// scatter returns what an image looks like after data is written across dst.
func scatter(img []byte, data []byte, dst []*metadata.Extent) {
	for _, e := range dst {
		n := int(e.GetNumBlocks()) * bs
		if e.GetStartBlock() != sparseHole {
			copy(img[int(e.GetStartBlock())*bs:], data[:n])
		}
		data = data[n:]
	}
}

func TestReplaceFamily(t *testing.T) {
	data := randBytes(5*bs, 1)
	dst := ext(7, 2, sparseHole, 1, 1, 2) // multi-extent with a hole
	enc := zstd.EncoderLevel(zstd.SpeedDefault)
	zw, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(enc))
	tests := []struct {
		name string
		typ  metadata.InstallOperation_Type
		blob func(t *testing.T) []byte
	}{
		{"replace", metadata.InstallOperation_REPLACE, func(*testing.T) []byte { return data }},
		{"replace-bz", metadata.InstallOperation_REPLACE_BZ, func(t *testing.T) []byte { return cli(t, data, "bzip2", "-c") }},
		{"replace-xz", metadata.InstallOperation_REPLACE_XZ, func(t *testing.T) []byte { return cli(t, data, "xz", "-c", "--check=none") }},
		{"replace-xz-x86", metadata.InstallOperation_REPLACE_XZ, func(t *testing.T) []byte { return cli(t, data, "xz", "-c", "--x86", "--lzma2") }},
		{"replace-zstd", metadata.InstallOperation_REPLACE_ZSTD, func(*testing.T) []byte { return zw.EncodeAll(data, nil) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blob := tt.blob(t)
			op := &metadata.InstallOperation{Type: tt.typ.Enum(), DataLength: proto.Uint64(uint64(len(blob))),
				DstExtents: dst, DataSha256Hash: hashOf(blob)}
			img := make(mem, 10*bs)
			if err := Execute(op, blob, Env{BlockSize: bs, Target: img}); err != nil {
				t.Fatal(err)
			}
			want := make([]byte, 10*bs)
			scatter(want, data, dst)
			if !bytes.Equal(img, want) {
				t.Fatal("image differs")
			}
			// A flipped hash must fail before anything is written.
			op.DataSha256Hash = hashOf([]byte("x"))
			img2 := make(mem, 10*bs)
			if err := Execute(op, blob, Env{BlockSize: bs, Target: img2}); !errors.Is(err, ErrHashMismatch) {
				t.Fatalf("error %v, want hash mismatch", err)
			}
			if !bytes.Equal(img2, make([]byte, 10*bs)) {
				t.Fatal("wrote before checking the hash")
			}
			// Destination too small / too large.
			op.DataSha256Hash = nil
			op.DstExtents = ext(0, 4)
			if err := Execute(op, blob, Env{BlockSize: bs, Target: make(mem, 10*bs)}); err == nil {
				t.Fatal("output larger than dst accepted")
			}
			op.DstExtents = ext(0, 7)
			if err := Execute(op, blob, Env{BlockSize: bs, Target: make(mem, 10*bs)}); err == nil {
				t.Fatal("output smaller than dst accepted")
			}
		})
	}
}

func TestReplacePadding(t *testing.T) {
	blob := []byte("short")
	op := &metadata.InstallOperation{Type: metadata.InstallOperation_REPLACE.Enum(), DataLength: proto.Uint64(5), DstExtents: ext(1, 1)}
	img := make(mem, 2*bs)
	for i := range img {
		img[i] = 0xAA
	}
	if err := Execute(op, blob, Env{BlockSize: bs, Target: img}); err != nil {
		t.Fatal(err)
	}
	if string(img[bs:bs+5]) != "short" || img[bs+5] != 0 || img[2*bs-1] != 0 || img[0] != 0xAA {
		t.Fatal("bad padding")
	}
}

func TestZeroDiscard(t *testing.T) {
	for _, typ := range []metadata.InstallOperation_Type{metadata.InstallOperation_ZERO, metadata.InstallOperation_DISCARD} {
		t.Run(typ.String(), func(t *testing.T) {
			img := make(mem, 6*bs)
			for i := range img {
				img[i] = 1
			}
			op := &metadata.InstallOperation{Type: typ.Enum(), DstExtents: ext(1, 2, 4, 1)}
			if err := Execute(op, nil, Env{BlockSize: bs, Target: img}); err != nil {
				t.Fatal(err)
			}
			for b := 0; b < 6; b++ {
				want := byte(1)
				if b == 1 || b == 2 || b == 4 {
					want = 0
				}
				if img[b*bs] != want || img[b*bs+bs-1] != want {
					t.Fatalf("block %d = %d, want %d", b, img[b*bs], want)
				}
			}
		})
	}
}

func TestSourceCopy(t *testing.T) {
	src := mem(randBytes(40*bs, 2))
	// Repeated source blocks, as in the AOSP sample: (37,2),(38,1),(38,1).
	srcExt := ext(37, 2, 38, 1, 38, 1)
	var want []byte
	for _, b := range []int{37, 38, 38, 38} {
		want = append(want, src[b*bs:(b+1)*bs]...)
	}
	op := &metadata.InstallOperation{Type: metadata.InstallOperation_SOURCE_COPY.Enum(), SrcExtents: srcExt,
		DstExtents: ext(0, 1, 10, 3), SrcSha256Hash: hashOf(want)}
	img := make(mem, 20*bs)
	if err := Execute(op, nil, Env{BlockSize: bs, Source: src, Target: img}); err != nil {
		t.Fatal(err)
	}
	exp := make([]byte, 20*bs)
	scatter(exp, want, op.DstExtents)
	if !bytes.Equal(img, exp) {
		t.Fatal("image differs")
	}
	op.SrcSha256Hash = hashOf(nil)
	if err := Execute(op, nil, Env{BlockSize: bs, Source: src, Target: make(mem, 20*bs)}); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("error %v, want hash mismatch", err)
	}
	op.SrcSha256Hash = nil
	op.SrcExtents = ext(39, 4) // past the end of the source
	if err := Execute(op, nil, Env{BlockSize: bs, Source: src, Target: make(mem, 20*bs)}); err == nil {
		t.Fatal("read past source end accepted")
	}
	if err := Execute(op, nil, Env{BlockSize: bs, Target: make(mem, 20*bs)}); err == nil {
		t.Fatal("missing source accepted")
	}
}

func TestBsdiffOps(t *testing.T) {
	src := mem(randBytes(8*bs, 3))
	newData := append([]byte{}, src[2*bs:5*bs]...)
	for i := 0; i < len(newData); i += 33 {
		newData[i] ^= 0x5A
	}
	// BSDF2 with raw streams: one diff run over the 3 source blocks.
	var diff []byte
	for i := range newData {
		diff = append(diff, newData[i]-src[2*bs+i])
	}
	ctrl := make([]byte, 24)
	putOff(ctrl[0:], int64(len(diff)))
	patch := append([]byte("BSDF2\x00\x00\x00"), make([]byte, 24)...)
	putOff(patch[8:], 24)
	putOff(patch[16:], int64(len(diff)))
	putOff(patch[24:], int64(len(newData)))
	patch = append(append(patch, ctrl...), diff...)
	for _, typ := range []metadata.InstallOperation_Type{metadata.InstallOperation_SOURCE_BSDIFF, metadata.InstallOperation_BROTLI_BSDIFF} {
		t.Run(typ.String(), func(t *testing.T) {
			op := &metadata.InstallOperation{Type: typ.Enum(), SrcExtents: ext(2, 3), DstExtents: ext(5, 1, 0, 2),
				DataLength: proto.Uint64(uint64(len(patch))), DataSha256Hash: hashOf(patch), SrcSha256Hash: hashOf(src[2*bs : 5*bs])}
			img := make(mem, 8*bs)
			if err := Execute(op, patch, Env{BlockSize: bs, Source: src, Target: img}); err != nil {
				t.Fatal(err)
			}
			exp := make([]byte, 8*bs)
			scatter(exp, newData, op.DstExtents)
			if !bytes.Equal(img, exp) {
				t.Fatal("image differs")
			}
			op.DstExtents = ext(0, 2)
			if err := Execute(op, patch, Env{BlockSize: bs, Source: src, Target: make(mem, 8*bs)}); err == nil || !strings.Contains(err.Error(), "new size") {
				t.Fatalf("size mismatch: %v", err)
			}
		})
	}
}

func putOff(b []byte, v int64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (8 * i))
	}
}

func TestUnsupported(t *testing.T) {
	for _, typ := range []metadata.InstallOperation_Type{metadata.InstallOperation_ZUCCHINI, opMove,
		opBsdiff, metadata.InstallOperation_Type(77)} {
		t.Run(typeName(typ), func(t *testing.T) {
			err := Execute(&metadata.InstallOperation{Type: typ.Enum()}, nil, Env{BlockSize: bs, Target: make(mem, bs)})
			if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), typeName(typ)) {
				t.Fatalf("error %v", err)
			}
		})
	}
}

func TestDiffSourceBound(t *testing.T) {
	op := &metadata.InstallOperation{Type: metadata.InstallOperation_BROTLI_BSDIFF.Enum(), SrcExtents: ext(0, 1<<40),
		DstExtents: ext(0, 1), DataLength: proto.Uint64(4)}
	err := Execute(op, []byte("BSDF"), Env{BlockSize: bs, Source: make(mem, bs), SourceSize: bs, Target: make(mem, bs)})
	if err == nil || !strings.Contains(err.Error(), "source bytes") {
		t.Fatalf("error %v", err)
	}
}

// TestPuffdiffOp applies a PUFFDIFF made by update_engine/puffin to blocks
// holding a zip-like deflate stream, through scattered extents.
func TestPuffdiffOp(t *testing.T) {
	mk := func(s string) []byte {
		var b bytes.Buffer
		w, _ := flate.NewWriter(&b, 9)
		w.Write([]byte(strings.Repeat(s, 400)))
		w.Close()
		out := make([]byte, 3*bs)
		copy(out[100:], b.Bytes())
		return out
	}
	oldData, newData := mk("hello puffin world "), mk("hello puffin planet ")
	srcDef, _, err := puffin.LocateStream(oldData, 800)
	if err != nil {
		t.Fatal(err)
	}
	dstDef, _, err := puffin.LocateStream(newData, 800)
	if err != nil {
		t.Fatal(err)
	}
	patch, err := puffin.Diff(oldData, newData, srcDef, dstDef, puffin.DiffOptions{})
	if err != nil {
		t.Fatal(err)
	}
	src := make(mem, 8*bs)
	scatter(src, oldData, ext(6, 1, 1, 2))
	op := &metadata.InstallOperation{Type: metadata.InstallOperation_PUFFDIFF.Enum(), SrcExtents: ext(6, 1, 1, 2), DstExtents: ext(5, 1, 0, 2),
		DataLength: proto.Uint64(uint64(len(patch))), DataSha256Hash: hashOf(patch), SrcSha256Hash: hashOf(oldData)}
	img := make(mem, 8*bs)
	if err := Execute(op, patch, Env{BlockSize: bs, Source: src, Target: img}); err != nil {
		t.Fatal(err)
	}
	exp := make([]byte, 8*bs)
	scatter(exp, newData, op.DstExtents)
	if !bytes.Equal(img, exp) {
		t.Fatal("image differs")
	}
	op.DstExtents = ext(0, 2)
	if err := Execute(op, patch, Env{BlockSize: bs, Source: src, Target: make(mem, 8*bs)}); err == nil {
		t.Fatal("size mismatch accepted")
	}
}

// TestLz4diffOp applies an LZ4DIFF_BSDIFF between two LZ4HC-compressed
// blocks through scattered extents, and refuses the wrong inner type.
func TestLz4diffOp(t *testing.T) {
	mk := func(s string) ([]byte, []byte, lz4diff.Block) {
		raw := []byte(strings.Repeat(s, 2000))
		c, n := liblz4.CompressHCDestSize(raw, bs, 9)
		raw = raw[:n]
		blk := make([]byte, bs)
		copy(blk[bs-len(c):], c)
		return raw, blk, lz4diff.Block{UncompressedLength: uint64(n), CompressedLength: bs}
	}
	oldRaw, oldBlk, ob := mk("the old erofs cluster text ")
	newRaw, newBlk, nb := mk("the new erofs cluster text! ")
	inner, err := bsdiff.Diff(oldRaw, newRaw).Encode(bsdiff.Format{})
	if err != nil {
		t.Fatal(err)
	}
	h := &lz4diff.Header{Src: lz4diff.Info{Algo: lz4diff.LZ4HC, Level: 9, Blocks: []lz4diff.Block{ob}, ZeroPadding: true},
		Dst: lz4diff.Info{Algo: lz4diff.LZ4HC, Level: 9, Blocks: []lz4diff.Block{nb}, ZeroPadding: true}}
	patch := h.Encode(inner)
	src := make(mem, 8*bs)
	scatter(src, oldBlk, ext(3, 1))
	op := &metadata.InstallOperation{Type: metadata.InstallOperation_LZ4DIFF_BSDIFF.Enum(), SrcExtents: ext(3, 1), DstExtents: ext(6, 1),
		DataLength: proto.Uint64(uint64(len(patch))), DataSha256Hash: hashOf(patch)}
	img := make(mem, 8*bs)
	if err := Execute(op, patch, Env{BlockSize: bs, Source: src, Target: img}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img[6*bs:7*bs], newBlk) {
		t.Fatal("destination block differs from the LZ4HC-compressed new data")
	}
	op.Type = metadata.InstallOperation_LZ4DIFF_PUFFDIFF.Enum()
	if err := Execute(op, patch, Env{BlockSize: bs, Source: src, Target: img}); err == nil {
		t.Fatal("LZ4DIFF_PUFFDIFF with a bsdiff inner patch accepted")
	}
}
