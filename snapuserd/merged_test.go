package snapuserd_test

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/snapuserdtest"
)

// TestMergedOpsReadBase: with num_merge_ops = all data ops (merge finished,
// base holds the target), Copy/Xor blocks must come from the base device —
// the source is garbage here — and the merge is reported complete.
func TestMergedOpsReadBase(t *testing.T) {
	for _, spec := range []snapuserdtest.TripleSpec{
		{Version: 2, Comp: cow.CompressionLz4, Blocks: 512, Seed: 21},
		{Version: 3, Comp: cow.CompressionZstd, Factor: 64 << 10, Blocks: 512, Seed: 22},
	} {
		t.Run(spec.String(), func(t *testing.T) {
			tr := snapuserdtest.GenTriple(t, spec)
			r, err := cow.NewReader(bytes.NewReader(tr.Cow), int64(len(tr.Cow)), nil)
			if err != nil {
				t.Fatal(err)
			}
			total := uint64(len(r.MergeOrder()))
			cowB := append([]byte(nil), tr.Cow...)
			binary.LittleEndian.PutUint64(cowB[cow.OffsetNumMergeOps:], total)
			garbage := make([]byte, len(tr.Source))
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range garbage {
				garbage[i] = byte(rng.Uint32())
			}
			s, err := snapuserd.NewSnapshot("m", bytes.NewReader(cowB), int64(len(cowB)), bytes.NewReader(garbage),
				bytes.NewReader(tr.Target), int64(len(tr.Target)), "m.cow")
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(tr.Target))
			if err := s.ReadSectors(got, 0); err != nil || !bytes.Equal(got, tr.Target) {
				t.Fatalf("read after merge: err %v, equal %v", err, bytes.Equal(got, tr.Target))
			}
			if m, tot, failed := s.MergeProgress(); m != total || tot != total || failed {
				t.Errorf("progress %d/%d failed=%v", m, tot, failed)
			}
			// A num_merge_ops beyond the merge order is reported as failed.
			binary.LittleEndian.PutUint64(cowB[cow.OffsetNumMergeOps:], total+5)
			s2, err := snapuserd.NewSnapshot("m", bytes.NewReader(cowB), int64(len(cowB)), bytes.NewReader(garbage),
				bytes.NewReader(tr.Target), int64(len(tr.Target)), "m.cow")
			if err == nil {
				if _, _, failed := s2.MergeProgress(); !failed {
					t.Error("num_merge_ops > total not reported as failed")
				}
			}
		})
	}
}

// TestScratchWindow: read_ahead_state = Done with ScratchMetadata for every
// ordered op; the source device is garbage, so Copy/Xor blocks can only be
// right if they are served from the durable read-ahead copy in the COW.
func TestScratchWindow(t *testing.T) {
	// A COW with a real merge order (sequence data, ordered ops first) and
	// fewer ordered ops than one window.
	pair := sameSizePairs(31, 300)["shifted"]
	p := newVABPart(t, t.TempDir(), "ra", pair, 3, false)
	cowB, r := p.readCOW(t)
	h := r.Header()
	lay, ok := h.Scratch()
	if !ok {
		t.Fatal("COW has no scratch region")
	}
	tr := struct{ Source, Base, Target []byte }{pair.Source, pair.Source, pair.Target}
	var ordered []cow.Op
	for _, op := range r.MergeOrder() {
		if !op.Type.IsOrdered() {
			break
		}
		ordered = append(ordered, op)
	}
	if len(ordered) == 0 || int64(len(ordered)) > lay.DataBlocks {
		t.Fatalf("%d ordered ops, scratch holds %d", len(ordered), lay.DataBlocks)
	}
	meta := cowB[lay.MetadataOffset:lay.MetadataOffset]
	for i, op := range ordered {
		off := lay.DataOffset + int64(i)*4096
		copy(cowB[off:off+4096], tr.Target[op.NewBlock*4096:])
		meta = cow.AppendScratchEntry(meta, cow.ScratchEntry{NewBlock: op.NewBlock, FileOffset: uint64(off)})
	}
	cowB[lay.StateOffset] = 2 // read_ahead_state = Done
	garbage := bytes.Repeat([]byte{0xa5}, len(tr.Source))
	s, err := snapuserd.NewSnapshot("ra", bytes.NewReader(cowB), int64(len(cowB)), bytes.NewReader(garbage),
		bytes.NewReader(tr.Base), int64(len(tr.Base)), "ra.cow")
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(tr.Target))
	if err := s.ReadSectors(got, 0); err != nil || !bytes.Equal(got, tr.Target) {
		t.Fatalf("read with durable scratch window: err %v, equal %v", err, bytes.Equal(got, tr.Target))
	}
	// Without the Done state the scratch is ignored and the garbage source shows.
	cowB[lay.StateOffset] = 1
	s, err = snapuserd.NewSnapshot("ra", bytes.NewReader(cowB), int64(len(cowB)), bytes.NewReader(garbage),
		bytes.NewReader(tr.Base), int64(len(tr.Base)), "ra.cow")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ReadSectors(got, 0); err != nil || bytes.Equal(got, tr.Target) {
		t.Fatalf("state InProgress must read the source device: err %v", err)
	}
}

// TestSnapshotErrors: malformed inputs give errors naming what failed.
func TestSnapshotErrors(t *testing.T) {
	tr := snapuserdtest.GenTriple(t, snapuserdtest.TripleSpec{Version: 3, Comp: cow.CompressionLz4, Factor: 4096, Blocks: 1024, Seed: 41})
	s, err := snapuserd.NewSnapshot("e", bytes.NewReader(tr.Cow), int64(len(tr.Cow)), bytes.NewReader(tr.Source[:4096]),
		bytes.NewReader(tr.Base), int64(len(tr.Base)), "e.cow")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ReadSectors(make([]byte, len(tr.Target)), 0); err == nil {
		t.Error("read with a truncated source device succeeded")
	}
	if err := s.ReadSectors(make([]byte, 1024), uint64(len(tr.Target)/512)-1); err == nil {
		t.Error("read beyond the device end succeeded")
	}
	if err := s.WriteSectors(make([]byte, 512), 0); err == nil {
		t.Error("write succeeded")
	}
	if _, err := snapuserd.NewSnapshot("e", bytes.NewReader(tr.Cow[:100]), 100, bytes.NewReader(tr.Source),
		bytes.NewReader(tr.Base), int64(len(tr.Base)), "e.cow"); err == nil {
		t.Error("truncated COW accepted")
	}
	if _, err := snapuserd.NewSnapshot("e", bytes.NewReader(tr.Cow), int64(len(tr.Cow)), bytes.NewReader(tr.Source),
		bytes.NewReader(tr.Base), 1000, "e.cow"); err == nil {
		t.Error("base size not a multiple of 512 accepted")
	}
}
