package cowdiff

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/cow/internal/cowfixture"
)

// images returns a source and a target that exercise every case: moved
// blocks (copies with dependencies), a swap (a cycle), new data, zeros,
// unchanged blocks and growth.
func images() (src, tgt []byte) {
	const bs = 4096
	src = cowfixture.Data(1, 64*bs)
	tgt = bytes.Clone(src)
	copy(tgt[10*bs:20*bs], src[11*bs:21*bs])         // shift down by one: chain of copies
	copy(tgt[30*bs:31*bs], src[31*bs:32*bs])         // swap 30 and 31: a cycle
	copy(tgt[31*bs:32*bs], src[30*bs:31*bs])         //
	copy(tgt[40*bs:44*bs], cowfixture.Data(2, 4*bs)) // new data
	clear(tgt[50*bs : 53*bs])                        // zeros
	tgt = append(tgt, cowfixture.Data(3, 8*bs)...)   // growth
	return src, tgt
}

func TestWriteAndMerge(t *testing.T) {
	src, tgt := images()
	for _, v3 := range []bool{false, true} {
		for _, alg := range []cow.Compression{cow.CompressionNone, cow.CompressionLz4, cow.CompressionZstd} {
			t.Run(fmt.Sprintf("v3=%v/%v", v3, alg), func(t *testing.T) {
				var f cowfixture.Buffer
				opts := cow.WriterOptions{Compression: alg, NoScratch: true, CompressionFactor: 16384, MaxBlocks: 128}
				var w cow.Writer
				var err error
				if v3 {
					w, err = cow.NewWriterV3(&f, opts)
				} else {
					opts.ClusterOps = 8
					w, err = cow.NewWriterV2(&f, opts)
				}
				if err != nil {
					t.Fatal(err)
				}
				st, err := Write(w, src, tgt, 4096, true)
				if err != nil {
					t.Fatal(err)
				}
				if st.Cycles != 2 || st.Copies != 10 || st.Zeros != 3 {
					t.Errorf("stats %+v", st)
				}
				b := f.Bytes()
				r, err := cow.NewReader(bytes.NewReader(b), int64(len(b)), nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := r.VerifyMergeOps(); err != nil {
					t.Fatal(err)
				}
				base := make([]byte, len(tgt))
				copy(base, src)
				if err := Merge(r, base); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(base, tgt) {
					t.Fatal("merged image differs from the target")
				}
			})
		}
	}
}

// TestMergeOrderMatters: merging the copies in reverse order corrupts the
// image, so TestWriteAndMerge's check can fail.
func TestMergeOrderMatters(t *testing.T) {
	src, tgt := images()
	var f cowfixture.Buffer
	w, err := cow.NewWriterV3(&f, cow.WriterOptions{NoScratch: true, MaxBlocks: 128})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Write(w, src, tgt, 4096, false); err != nil { // no sequence data
		t.Fatal(err)
	}
	b := f.Bytes()
	r, err := cow.NewReader(bytes.NewReader(b), int64(len(b)), nil)
	if err != nil {
		t.Fatal(err)
	}
	// v3 without sequence data merges in file order, which Write made safe.
	base := make([]byte, len(tgt))
	copy(base, src)
	if err := Merge(r, base); err != nil || !bytes.Equal(base, tgt) {
		t.Fatalf("file-order merge: %v", err)
	}
	// The same copies in reverse order: VerifyMergeOps must object and the
	// merge must produce wrong bytes.
	var g cowfixture.Buffer
	w2, err := cow.NewWriterV3(&g, cow.WriterOptions{NoScratch: true, MaxBlocks: 128})
	if err != nil {
		t.Fatal(err)
	}
	var seq []uint32
	for b := uint32(19); b >= 10; b-- {
		seq = append(seq, b)
	}
	if err := w2.AddSequenceData(seq); err != nil {
		t.Fatal(err)
	}
	for _, b := range seq {
		if err := w2.AddCopy(uint64(b), uint64(b)+1, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := w2.Finalize(); err != nil {
		t.Fatal(err)
	}
	gb := g.Bytes()
	r2, err := cow.NewReader(bytes.NewReader(gb), int64(len(gb)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.VerifyMergeOps(); err == nil {
		t.Error("VerifyMergeOps accepted a reversed copy chain")
	}
	bad := bytes.Clone(src)
	if err := Merge(r2, bad); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(bad[10*4096:20*4096], tgt[10*4096:20*4096]) {
		t.Fatal("reversed merge order did not corrupt; the merge check would be vacuous")
	}
}
