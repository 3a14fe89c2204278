package merge

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
)

// aospState is a tiny, independent writer of the merge state AOSP's
// snapuserd leaves on disk (cow-format.md §5, snapuserd.md §5), built from
// the spec with plain byte offsets — not with this package's commit code —
// over a COW whose ops come from the cow writer: num_merge_ops (u64 at
// offset 26), the BufferState byte at header_size, ScratchMetadata
// {new_block u64, file_offset u64} from header_size+1 with an all-zero
// terminator, and the window's data at header_size + 8192 + i*4096.
type aospState struct {
	cow, base []byte
}

// applyOps merges ops [from, to) of order into img the way AOSP's merge
// thread leaves the base device: each destination gets its target block,
// Copy/Xor sources read from img (intact for every op not yet merged).
func applyOps(t *testing.T, img []byte, order []cow.Op, src Source, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		copy(img[order[i].NewBlock*bs:], targetOf(t, img, order, src, i))
	}
}

// targetOf computes op i's target bytes from the old data in img.
func targetOf(t *testing.T, img []byte, order []cow.Op, src Source, i int) []byte {
	t.Helper()
	op := &order[i]
	out := make([]byte, op.Blocks()*bs)
	switch op.Type {
	case cow.OpCopy:
		copy(out, img[op.Source*bs:(op.Source+1)*bs])
	case cow.OpXor:
		if n, err := src.ReadData(op, out, 0); err != nil || n != bs {
			t.Fatalf("xor payload of op %d: %d, %v", i, n, err)
		}
		for j := range out {
			out[j] ^= img[op.Source+uint64(j)]
		}
	case cow.OpReplace:
		if n, err := src.ReadData(op, out, 0); err != nil || n != len(out) {
			t.Fatalf("payload of op %d: %d, %v", i, n, err)
		}
	case cow.OpZero:
	}
	return out
}

// TestResumeAOSPWrittenState: merge states as AOSP's daemon writes them —
// a window made durable (read_ahead_state 2) and partly written to base
// before a reboot, a committed window boundary (state 1 over the stale
// entries of the last window), the replace phase — are served and resumed
// to the exact target.
func TestResumeAOSPWrittenState(t *testing.T) {
	img := generate(t, genConfig{seed: 301, blocks: 2000, version: 2, scratch: true, real: true, comp: cow.CompressionLz4})
	if img.nOrd < 2*510+10 {
		t.Fatalf("%d ordered ops: need more than two AOSP windows", img.nOrd)
	}
	hs := int(binary.LittleEndian.Uint16(img.cowImg[12:])) // header_size
	const window = 510
	build := func(merged, written int, state byte, scratchStart int) aospState {
		base := bytes.Clone(img.base)
		applyOps(t, base, img.order, img.source, 0, merged)
		c := bytes.Clone(img.cowImg)
		if scratchStart >= 0 {
			// The scratch window's data is computed from the base as it
			// was before the window (its sources are intact there).
			n := min(window, img.nOrd-scratchStart)
			before := bytes.Clone(img.base)
			applyOps(t, before, img.order, img.source, 0, scratchStart)
			meta := make([]byte, 8192) // the full metadata buffer AOSP copies
			for k := 0; k < n; k++ {
				off := hs + 8192 + k*bs
				binary.LittleEndian.PutUint64(meta[16*k:], img.order[scratchStart+k].NewBlock)
				binary.LittleEndian.PutUint64(meta[16*k+8:], uint64(off))
			}
			// AOSP: metadata buffer to header_size+1 (its last byte lands
			// on the first data byte), then the data, restoring it.
			copy(c[hs+1:], meta)
			for k := 0; k < n; k++ {
				copy(c[hs+8192+k*bs:], targetOf(t, before, img.order, img.source, scratchStart+k))
			}
		}
		// A crash while the window's runs were being written: some of
		// its destinations already hold target data.
		for i := merged; i < merged+written; i++ {
			copy(base[img.order[i].NewBlock*bs:], img.target[img.order[i].NewBlock*bs:(img.order[i].NewBlock+1)*bs])
		}
		binary.LittleEndian.PutUint64(c[26:], uint64(merged))
		c[hs] = state
		return aospState{cow: c, base: base}
	}
	tests := []struct {
		name string
		st   aospState
	}{
		{"window 1 durable, half written", build(window, window/2, cow.ReadAheadDone, window)},
		{"window 1 durable, nothing written", build(window, 0, cow.ReadAheadDone, window)},
		{"window 2 committed", build(2*window, 0, cow.ReadAheadInProgress, window)},
		{"replace phase", build(img.nOrd+300, 0, cow.ReadAheadInProgress, (img.nOrd-1)/window*window)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Check(bytes.NewReader(tc.st.cow), int64(len(tc.st.cow)), "aosp.cow", img.source); err != nil {
				t.Fatalf("Check: %v", err)
			}
			cf, bf := faultfs.NewMemFile("aosp.cow", tc.st.cow), faultfs.NewMemFile("base.img", tc.st.base)
			e, err := New(cf, bf, img.source, nil)
			if err != nil {
				t.Fatal(err)
			}
			served := make([]byte, len(img.target))
			if _, err := e.ReadAt(served, 0); err != nil {
				t.Fatal(err)
			}
			if d := diffBlocks(served, img.target); d != "" {
				t.Fatalf("served before resuming: %s", d)
			}
			if err := e.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			if d := diffBlocks(bf.Bytes(), img.target); d != "" {
				t.Fatalf("after resume: %s", d)
			}
			if nmo := binary.LittleEndian.Uint64(cf.Bytes()[26:]); nmo != uint64(len(img.order)) {
				t.Fatalf("num_merge_ops %d after resume, want %d", nmo, len(img.order))
			}
		})
	}
}
