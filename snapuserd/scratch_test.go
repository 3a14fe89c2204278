package snapuserd_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/cow/create"
	"github.com/vabc-go/vabc/internal/faultfs"
	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/merge"
)

// TestScratchAcceptance: every reader of the scratch region (cow.ReadScratch,
// merge.New, merge.Check, the daemon's pre-merge read path and create.View)
// accepts the same scratch states and refuses the same malformed ones, and
// the accepting ones serve the target.
func TestScratchAcceptance(t *testing.T) {
	pair := sameSizePairs(31, 1500)["shuffled"]
	p := newVABPart(t, t.TempDir(), "system", pair, 3, false)
	cowB, r0 := p.readCOW(t)
	order := r0.MergeOrder()
	nOrd := 0
	for nOrd < len(order) && order[nOrd].Type.IsOrdered() {
		nOrd++
	}
	// The COW as it is once the first window is durable (read_ahead_state
	// 2) and before any of it reached the base device.
	cf, bf := faultfs.NewMemFile("system.cow", cowB), faultfs.NewMemFile("system.img", pair.Source)
	var state2 []byte
	var window int
	e, err := merge.New(cf, bf, r0, &merge.Options{OnCheckpoint: func(c merge.Checkpoint) {
		if c.Kind == merge.WindowPersisted && state2 == nil {
			state2, window = cf.Bytes(), c.Ops
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	if state2 == nil || window < 8 {
		t.Fatalf("no persisted window of at least 8 ops (%d ordered ops)", nOrd)
	}
	hs := int(r0.Header().HeaderSize)
	bs := 4096
	put64 := func(b []byte, off int, v uint64) { binary.LittleEndian.PutUint64(b[off:], v) }
	entry := func(k int) int { return hs + 1 + 16*k }
	tests := []struct {
		name   string
		accept bool
		mod    func(b []byte)
	}{
		{"aosp window", true, func([]byte) {}},
		{"state 1 with stale entries", true, func(b []byte) { b[hs] = cow.ReadAheadInProgress }},
		{"state 0", true, func(b []byte) { b[hs] = cow.ReadAheadNotStarted }},
		{"data of entries 0 and 1 swapped", true, func(b []byte) {
			o0, o1 := binary.LittleEndian.Uint64(b[entry(0)+8:]), binary.LittleEndian.Uint64(b[entry(1)+8:])
			d0 := bytes.Clone(b[o0 : o0+uint64(bs)])
			copy(b[o0:o0+uint64(bs)], b[o1:o1+uint64(bs)])
			copy(b[o1:o1+uint64(bs)], d0)
			put64(b, entry(0)+8, o1)
			put64(b, entry(1)+8, o0)
		}},
		{"state byte 7", false, func(b []byte) { b[hs] = 7 }},
		{"state 2 without entries", false, func(b []byte) { clear(b[entry(0):entry(2)]) }},
		{"state 2 wrong new_block", false, func(b []byte) { put64(b, entry(5), 1<<40) }},
		{"state 2 offset outside data", false, func(b []byte) { put64(b, entry(3)+8, 12) }},
		{"state 2 offset in the entry list", false, func(b []byte) { put64(b, entry(3)+8, uint64(entry(window-1))) }},
		{"state 2 offsets overlap", false, func(b []byte) { put64(b, entry(3)+8, uint64(hs+8192+bs*2+1)) }},
		{"state 2 duplicate offset", false, func(b []byte) { put64(b, entry(3)+8, uint64(hs+8192)) }},
		{"state 2 offset past the region", false, func(b []byte) { put64(b, entry(3)+8, uint64(hs+cow.BufferRegionDefaultSize-100)) }},
		{"state 2 past ordered ops", false, func(b []byte) { put64(b, cow.OffsetNumMergeOps, uint64(nOrd)) }},
		{"state 2 no terminator", false, func(b []byte) {
			for k := 0; k < 512; k++ {
				put64(b, entry(k), uint64(k+1))
				put64(b, entry(k)+8, uint64(hs+8192))
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(state2)
			tc.mod(b)
			r, err := cow.NewReader(bytes.NewReader(b), int64(len(b)), &cow.ReaderOptions{Path: "system.cow"})
			if err != nil {
				t.Fatal(err)
			}
			size := int64(len(pair.Source))
			got := map[string][]byte{} // served image of each accepting reader
			readers := []struct {
				name string
				open func() ([]byte, error)
			}{
				{"cow.ReadScratch", func() ([]byte, error) { _, err := r.ReadScratch(bytes.NewReader(b)); return nil, err }},
				{"merge.Check", func() ([]byte, error) {
					_, err := merge.Check(bytes.NewReader(b), int64(len(b)), "system.cow", r)
					return nil, err
				}},
				{"merge.New", func() ([]byte, error) {
					e, err := merge.New(faultfs.NewMemFile("system.cow", b), faultfs.NewMemFile("system.img", pair.Source), r, nil)
					if err != nil {
						return nil, err
					}
					img := make([]byte, size)
					_, err = e.ReadAt(img, 0)
					return img, err
				}},
				{"snapuserd.NewSnapshot", func() ([]byte, error) {
					s, err := snapuserd.NewSnapshot("system", bytes.NewReader(b), int64(len(b)), bytes.NewReader(pair.Source), bytes.NewReader(pair.Source), size, "system.cow")
					if err != nil {
						return nil, err
					}
					img := make([]byte, size)
					return img, s.ReadSectors(img, 0)
				}},
				{"create.NewView", func() ([]byte, error) {
					v, err := create.NewView(r, bytes.NewReader(b), create.Image{R: bytes.NewReader(pair.Source), Size: size})
					if err != nil {
						return nil, err
					}
					img := make([]byte, size)
					for blk := 0; blk < int(size)/bs; blk++ {
						if err := v.ReadBlock(uint64(blk), img[blk*bs:(blk+1)*bs]); err != nil {
							return nil, err
						}
					}
					return img, nil
				}},
			}
			var verdicts []string
			for _, rd := range readers {
				img, err := rd.open()
				verdicts = append(verdicts, fmt.Sprintf("%s: %v", rd.name, err))
				if (err == nil) != tc.accept {
					t.Errorf("%s: error %v, want accepted=%v", rd.name, err, tc.accept)
				}
				if err == nil && img != nil {
					got[rd.name] = img
				}
			}
			for name, img := range got {
				if i := firstDiff(img, pair.Target); i >= 0 {
					t.Errorf("%s serves byte %d (block %d) unlike the target", name, i, i/bs)
				}
			}
			if t.Failed() {
				t.Logf("verdicts:\n%v", verdicts)
			}
		})
	}
}
