package snapuserd_test

import (
	"bytes"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/snapuserdtest"
)

func snapshotOf(t testing.TB, tr *snapuserdtest.Triple) *snapuserd.Snapshot {
	t.Helper()
	s, err := snapuserd.NewSnapshot(tr.Name, bytes.NewReader(tr.Cow), int64(len(tr.Cow)), bytes.NewReader(tr.Source),
		bytes.NewReader(tr.Base), int64(len(tr.Base)), tr.Name+".cow")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSnapshotDirect checks every block of every triple through the
// handler directly (no transport), including multi-block units.
func TestSnapshotDirect(t *testing.T) {
	for _, spec := range snapuserdtest.Specs(1024) {
		t.Run(spec.String(), func(t *testing.T) {
			tr := snapuserdtest.GenTriple(t, spec)
			s := snapshotOf(t, tr)
			got := make([]byte, len(tr.Target))
			if err := s.ReadSectors(got, 0); err != nil {
				t.Fatal(err)
			}
			if i := firstDiff(got, tr.Target); i >= 0 {
				t.Fatalf("full read differs at byte %d (block %d)", i, i/snapuserd.BlockSize)
			}
			if spec.Version == 3 && spec.Factor > snapuserd.BlockSize {
				multi := 0
				for _, op := range s.Reader().Ops() {
					if op.FactorShift > 0 {
						multi++
					}
				}
				if multi == 0 {
					t.Errorf("no multi-block replace ops generated")
				}
			}
			for _, typ := range []cow.OpType{cow.OpCopy, cow.OpXor, cow.OpReplace, cow.OpZero} {
				if tr.Counts[typ] == 0 {
					t.Errorf("no %v blocks generated", typ)
				}
			}
			if tr.Unmapped == 0 {
				t.Error("no unmapped blocks generated")
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// TestSnapshotReadSizes reads every triple in requests of several sizes and
// alignments, so that Copy/Xor runs and Replace units are cut at every kind
// of boundary (run coalescing, whole-unit decoding into the request,
// partial units through the cache).
func TestSnapshotReadSizes(t *testing.T) {
	sizes := []int{snapuserd.BlockSize, 3 * snapuserd.BlockSize, 17 * snapuserd.BlockSize, 64<<10 + snapuserd.BlockSize, 1 << 20, 1536}
	for _, spec := range snapuserdtest.Specs(512) {
		if spec.Comp != cow.CompressionLz4 && spec.Comp != cow.CompressionNone {
			continue
		}
		t.Run(spec.String(), func(t *testing.T) {
			tr := snapuserdtest.GenTriple(t, spec)
			s := snapshotOf(t, tr)
			for _, sz := range sizes {
				for _, shift := range []int{0, 5 * snapuserd.BlockSize, 512} {
					got := make([]byte, len(tr.Target))
					copy(got, tr.Target[:shift])
					for off := shift; off < len(got); off += sz {
						n := min(sz, len(got)-off)
						if err := s.ReadSectors(got[off:off+n], uint64(off/512)); err != nil {
							t.Fatalf("read %d at %d: %v", n, off, err)
						}
					}
					if i := firstDiff(got, tr.Target); i >= 0 {
						t.Fatalf("reads of %d bytes from %d: differ at byte %d (block %d)", sz, shift, i, i/snapuserd.BlockSize)
					}
				}
			}
		})
	}
}
