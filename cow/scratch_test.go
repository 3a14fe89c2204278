package cow

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// scratchFuzzOrder is the merge order FuzzReadScratch checks windows against:
// six ordered ops, then Replace and Zero ops.
var scratchFuzzOrder = []Op{
	{Type: OpCopy, NewBlock: 10, Source: 11}, {Type: OpCopy, NewBlock: 11, Source: 12},
	{Type: OpXor, NewBlock: 3, Source: 4 * 4096}, {Type: OpCopy, NewBlock: 20, Source: 2},
	{Type: OpCopy, NewBlock: 21, Source: 1}, {Type: OpXor, NewBlock: 7, Source: 9*4096 + 5},
	{Type: OpReplace, NewBlock: 30}, {Type: OpZero, NewBlock: 31},
}

// scratchFuzzFile is a v2 COW prefix with a bufferSize scratch region: the
// header, then region, zero-padded to fileSize bytes after the header.
func scratchFuzzFile(bufferSize uint32, numMergeOps uint64, region []byte, fileSize uint32) (*Header, []byte) {
	h := &Header{Magic: Magic, MajorVersion: 2, HeaderSize: HeaderV2Size, BlockSize: DefaultBlockSize,
		BufferSize: bufferSize, NumMergeOps: numMergeOps, OpSize: OpV2Size, FooterSize: FooterSize, ClusterOps: DefaultClusterOps}
	f := make([]byte, HeaderV2Size+max(len(region), int(fileSize%(1<<20))))
	copy(f[HeaderV2Size:], region)
	return h, f
}

// scratchSeed is a valid state-2 region of a 16 KiB scratch area (capacity 2)
// holding a window of n ops from merge step start.
func scratchSeed(start, n int) []byte {
	r := make([]byte, 64+8192)
	r[0] = ReadAheadDone
	for k := 0; k < n; k++ {
		binary.LittleEndian.PutUint64(r[1+16*k:], scratchFuzzOrder[start+k].NewBlock)
		binary.LittleEndian.PutUint64(r[1+16*k+8:], uint64(HeaderV2Size+64+4096*k))
	}
	return r[:1+16*(n+1)]
}

func TestReadScratch(t *testing.T) {
	hs := uint64(HeaderV2Size)
	tests := []struct {
		name     string
		buf      uint32
		nmo      uint64
		region   []byte
		fileSize uint32
		ok       bool
		entries  int
	}{
		{"no scratch", 0, 0, nil, 0, true, 0},
		{"state 0", 16384, 0, []byte{0}, 16384, true, 0},
		{"state 1 stale entries", 16384, 2, append([]byte{1}, scratchSeed(0, 2)[1:]...), 16384, true, 0},
		{"window of 2 at 0", 16384, 0, scratchSeed(0, 2), 16384, true, 2},
		{"window of 1 at 5", 16384, 5, scratchSeed(5, 1), 16384, true, 1},
		{"window past ordered ops", 16384, 5, scratchSeed(4, 2), 16384, false, 0},
		{"wrong new_block", 16384, 1, scratchSeed(0, 2), 16384, false, 0},
		{"state 3", 16384, 0, []byte{3}, 16384, false, 0},
		{"file ends in the region", 16384, 0, []byte{0}, 16000, false, 0},
		{"region too small", 4096, 0, []byte{0}, 4096, false, 0},
		{"empty window", 16384, 0, []byte{2}, 16384, false, 0},
		{"more entries than capacity", 16384, 0, func() []byte {
			r := scratchSeed(0, 2)
			r = append(r[:1+32], make([]byte, 32)...)
			binary.LittleEndian.PutUint64(r[1+32:], scratchFuzzOrder[2].NewBlock)
			binary.LittleEndian.PutUint64(r[1+40:], hs+64+8192)
			return r
		}(), 16384, false, 0},
		{"offset in the entries", 16384, 0, func() []byte {
			r := scratchSeed(0, 1)
			binary.LittleEndian.PutUint64(r[9:], hs+1+16)
			return r
		}(), 16384, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, f := scratchFuzzFile(tc.buf, tc.nmo, tc.region, tc.fileSize)
			s, err := ReadScratch(bytes.NewReader(f), int64(len(f)), h, scratchFuzzOrder, "x.cow")
			if (err == nil) != tc.ok {
				t.Fatalf("ReadScratch = %+v, %v; want ok=%v", s, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			if err == nil && s != nil && len(s.Entries) != tc.entries {
				t.Fatalf("%d entries, want %d", len(s.Entries), tc.entries)
			}
			if tc.buf == 0 && s != nil {
				t.Fatal("scratch decoded without a region")
			}
		})
	}
}

// FuzzReadScratch: no input panics; what is accepted satisfies the rule.
func FuzzReadScratch(f *testing.F) {
	f.Add(uint32(16384), uint64(0), scratchSeed(0, 2), uint32(16384))
	f.Add(uint32(16384), uint64(4), scratchSeed(4, 2), uint32(16384))
	f.Add(uint32(2<<20), uint64(0), []byte{1}, uint32(2<<20))
	f.Fuzz(func(t *testing.T, bufferSize uint32, numMergeOps uint64, region []byte, fileSize uint32) {
		bufferSize %= 1 << 20
		h, file := scratchFuzzFile(bufferSize, numMergeOps, region, fileSize)
		s, err := ReadScratch(bytes.NewReader(file), int64(len(file)), h, scratchFuzzOrder, "fuzz.cow")
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if s == nil {
			if h.HasScratch() {
				t.Fatal("no Scratch for a region")
			}
			return
		}
		if s.State > ReadAheadDone || s.State != ReadAheadDone && s.Entries != nil {
			t.Fatalf("state %d with %d entries", s.State, len(s.Entries))
		}
		if len(s.Entries) > s.Capacity {
			t.Fatalf("%d entries, capacity %d", len(s.Entries), s.Capacity)
		}
		end := uint64(HeaderV2Size) + uint64(bufferSize)
		for k, e := range s.Entries {
			if e.NewBlock != scratchFuzzOrder[numMergeOps+uint64(k)].NewBlock || e.FileOffset+4096 > end {
				t.Fatalf("accepted entry %d %+v", k, e)
			}
		}
	})
}
