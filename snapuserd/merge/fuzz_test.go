package merge

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
)

// fuzzImage is a small fixed merge: 40 shift-by-1 copies, 10 replaces.
func fuzzImage() (*fakeSource, []byte) {
	src := &fakeSource{payload: map[uint64][]byte{}}
	for b := uint64(0); b < 40; b++ {
		src.order = append(src.order, cow.Op{Type: cow.OpCopy, NewBlock: b, Source: b + 1})
	}
	for b := uint64(50); b < 60; b++ {
		src.order = append(src.order, cow.Op{Type: cow.OpReplace, NewBlock: b, DataLength: bs})
		src.payload[b] = bytes.Repeat([]byte{byte(b)}, bs)
	}
	base := make([]byte, 64*bs)
	for i := range base {
		base[i] = byte(i / bs)
	}
	return src, base
}

// FuzzMergeState feeds arbitrary merge state (num_merge_ops, read_ahead_state,
// ScratchMetadata bytes) to Check and New. Neither may panic, they must agree
// on whether the state is usable, and a usable state must merge without error.
func FuzzMergeState(f *testing.F) {
	src, base := fuzzImage()
	seed := func(nmo uint64, state byte, ents []cow.ScratchEntry) []byte {
		p := binary.LittleEndian.AppendUint64(nil, nmo)
		p = append(p, state)
		for _, e := range ents {
			p = cow.AppendScratchEntry(p, e)
		}
		return append(p, make([]byte, 16)...)
	}
	hs := uint64(cow.HeaderV2Size)
	data := hs + 8192
	var valid []cow.ScratchEntry
	for k := uint64(0); k < 10; k++ {
		valid = append(valid, cow.ScratchEntry{NewBlock: 10 + k, FileOffset: data + k*bs})
	}
	f.Add(seed(0, 0, nil))
	f.Add(seed(10, 1, nil))
	f.Add(seed(10, 2, valid))
	f.Add(seed(10, 2, valid[:3]))
	f.Add(seed(40, 1, nil))
	f.Add(seed(45, 1, nil))
	f.Add(seed(11, 2, valid))
	f.Add(seed(10, 2, []cow.ScratchEntry{{NewBlock: 10, FileOffset: 3}}))
	f.Add(seed(50, 1, nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 9 {
			return
		}
		img := makeCOW(t, 2, true)
		copy(img[cow.OffsetNumMergeOps:], in[:8])
		img[hs] = in[8]
		meta := in[9:]
		if len(meta) > 8191 {
			meta = meta[:8191]
		}
		copy(img[hs+1:], meta)
		_, cerr := Check(bytes.NewReader(img), int64(len(img)), "fuzz.cow", src)
		cf, bf := faultfs.NewMemFile("fuzz.cow", img), faultfs.NewMemFile("base", base)
		e, nerr := New(cf, bf, src, &Options{WindowBlocks: 10})
		if (cerr == nil) != (nerr == nil) {
			t.Fatalf("Check and New disagree: Check %v, New %v", cerr, nerr)
		}
		if nerr != nil {
			if !errors.Is(nerr, ErrCorrupt) && !errors.Is(nerr, cow.ErrCorrupt) {
				t.Fatalf("New error not marked corrupt: %v", nerr)
			}
			return
		}
		if err := e.Run(context.Background()); err != nil {
			t.Fatalf("Run on a state New accepted: %v", err)
		}
		if st, err := Check(cf, int64(len(img)), "fuzz.cow", src); err != nil || !st.Complete {
			t.Fatalf("after Run: %+v, %v", st, err)
		}
	})
}
