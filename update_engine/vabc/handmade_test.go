package vabc

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/update_engine/bsdiff"
	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/payload"
	"github.com/vabc-go/vabc/update_engine/payload/payloadtest"
)

func mergeOp(typ metadata.CowMergeOperation_Type, src, dst, n uint64, off uint32) *metadata.CowMergeOperation {
	srcN := n
	if off != 0 {
		srcN++
	}
	return &metadata.CowMergeOperation{Type: typ.Enum(), SrcExtent: payloadtest.Ext(src, srcN)[0], DstExtent: payloadtest.Ext(dst, n)[0], SrcOffset: proto.Uint32(off)}
}

// TestHandMade covers what generated payloads rarely contain: identity and
// repeated-source SOURCE_COPY blocks, multi-extent bsdiff, DISCARD, a
// COW_XOR hint whose unaligned source would pass the end of the old image
// (written against the aligned block), and a COW_COPY hint no SOURCE_COPY
// performs (dropped).
func TestHandMade(t *testing.T) {
	const bs = 4096
	rng := rand.New(rand.NewPCG(1, 2))
	blk := func(n int) []byte {
		b := make([]byte, n*bs)
		for i := range b {
			b[i] = byte(rng.IntN(4))
		}
		return b
	}
	old := blk(8)
	at := func(img []byte, b int) []byte { return img[b*bs : (b+1)*bs] }
	nw := make([]byte, 10*bs)
	copy(nw[0:], old[6*bs:8*bs])    // 0-1 ← old 6-7 (COW_COPY)
	copy(at(nw, 2), at(old, 2))     // 2 ← old 2 (identity)
	copy(at(nw, 3), blk(1))         // 3: REPLACE
	copy(nw[6*bs:], old[7*bs:8*bs]) // 6-7: bsdiff of old 0,1,7
	copy(at(nw, 7), at(old, 3))
	for i := 6 * bs; i < 8*bs; i += 97 {
		nw[i] ^= 1
	}
	copy(at(nw, 8), at(old, 3)) // 8-9 ← old 3, 3 (repeated source)
	copy(at(nw, 9), at(old, 3))

	b := payloadtest.New(bs, 8)
	b.AddOp("sys", &metadata.InstallOperation{Type: metadata.InstallOperation_SOURCE_COPY.Enum(), SrcExtents: payloadtest.Ext(6, 2, 2, 1), DstExtents: payloadtest.Ext(0, 3)}, nil)
	b.AddOp("sys", &metadata.InstallOperation{Type: metadata.InstallOperation_REPLACE.Enum(), DstExtents: payloadtest.Ext(3, 1)}, at(nw, 3))
	b.AddOp("sys", &metadata.InstallOperation{Type: metadata.InstallOperation_ZERO.Enum(), DstExtents: payloadtest.Ext(4, 1)}, nil)
	b.AddOp("sys", &metadata.InstallOperation{Type: metadata.InstallOperation_DISCARD.Enum(), DstExtents: payloadtest.Ext(5, 1)}, nil)
	src := append(append([]byte{}, old[0:2*bs]...), at(old, 7)...)
	patch, err := bsdiff.Diff(src, nw[6*bs:8*bs]).Encode(bsdiff.Format{Ctrl: bsdiff.Brotli, Diff: bsdiff.Brotli, Extra: bsdiff.Brotli})
	if err != nil {
		t.Fatal(err)
	}
	b.AddOp("sys", &metadata.InstallOperation{Type: metadata.InstallOperation_BROTLI_BSDIFF.Enum(), SrcExtents: payloadtest.Ext(0, 2, 7, 1), DstExtents: payloadtest.Ext(6, 1, 7, 1)}, patch)
	b.AddOp("sys", &metadata.InstallOperation{Type: metadata.InstallOperation_SOURCE_COPY.Enum(), SrcExtents: payloadtest.Ext(3, 1, 3, 1), DstExtents: payloadtest.Ext(8, 2)}, nil)
	pu := b.Partition("sys")
	payloadtest.SetInfo(pu, nw, old)
	pu.MergeOperations = []*metadata.CowMergeOperation{
		mergeOp(metadata.CowMergeOperation_COW_COPY, 6, 0, 2, 0),
		mergeOp(metadata.CowMergeOperation_COW_COPY, 5, 3, 1, 0), // no SOURCE_COPY does this
		mergeOp(metadata.CowMergeOperation_COW_XOR, 7, 6, 1, 100),
		mergeOp(metadata.CowMergeOperation_COW_XOR, 3, 7, 1, 0),
		mergeOp(metadata.CowMergeOperation_COW_COPY, 2, 2, 1, 0), // identity
		mergeOp(metadata.CowMergeOperation_COW_COPY, 3, 8, 2, 0), // 8 ← 3 matches; 9 ← 4 does not (the op copies 3 again)
	}
	dir := t.TempDir()
	pp := filepath.Join(dir, "payload.bin")
	os.WriteFile(pp, b.Build(), 0o644)
	os.WriteFile(filepath.Join(dir, "sys.img"), old, 0o644)
	p, err := payload.Open(pp)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, v := range []uint32{2, 3} {
		out := t.TempDir()
		res, err := Write(t.Context(), p, Options{OutDir: out, OldDir: dir, CowVersion: v, Compression: "lz4", WrapFile: noSync})
		if err != nil {
			t.Fatal(err)
		}
		r := res[0]
		if !r.Verified || r.CopyBlocks != 3 || r.XorBlocks != 2 || r.ZeroBlocks != 2 || r.ReplaceBlocks != 2 || r.DroppedHints != 2 || r.SequenceBlocks != 5 {
			t.Errorf("v%d: %+v", v, r)
		}
		got := mergeCOW(t, old, int64(len(nw)), r.Path)
		if !bytes.Equal(got, nw) {
			t.Fatalf("v%d: merged image differs at block %d", v, firstDiff(got, nw)/bs)
		}
		cr, err := cow.Open(r.Path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range cr.Ops() {
			if op.Type == cow.OpXor && op.NewBlock == 6 && op.Source != 7*bs {
				t.Errorf("v%d: XOR source of block 6 is %d, want the aligned block 7 (%d)", v, op.Source, 7*bs)
			}
			if op.NewBlock == 2 && op.Type != cow.OpLabel && op.Type != cow.OpCluster {
				t.Errorf("v%d: identity block 2 has a COW op: %v", v, op)
			}
		}
		cr.Close()
	}
}
