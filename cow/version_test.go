package cow

import (
	"os"
	"path/filepath"
	"testing"
)

func TestVersion(t *testing.T) {
	tests := []struct {
		v                                   Version
		known, bufferSize, fixed, rawAtUnit bool
		header, op                          int
	}{
		{V1, true, false, false, false, HeaderV1Size, OpV2Size},
		{V2, true, true, false, false, HeaderV2Size, OpV2Size},
		{V3, true, true, true, true, HeaderV3Size, OpV3Size},
		{0, false, false, false, false, HeaderV1Size, OpV2Size},
		{4, false, true, true, true, HeaderV3Size, OpV3Size},
	}
	for _, tc := range tests {
		if tc.v.Known() != tc.known || tc.v.HasBufferSize() != tc.bufferSize || tc.v.FixedRegions() != tc.fixed ||
			tc.v.FileWideCompression() != tc.fixed || tc.v.RawAtUnitSize() != tc.rawAtUnit ||
			tc.v.HeaderSize() != tc.header || tc.v.OpSize() != tc.op {
			t.Errorf("%v: known %v buffer_size %v fixed %v raw %v header %d op %d", tc.v, tc.v.Known(), tc.v.HasBufferSize(),
				tc.v.FixedRegions(), tc.v.RawAtUnitSize(), tc.v.HeaderSize(), tc.v.OpSize())
		}
	}
	if V3.String() != "v3" {
		t.Errorf("V3.String() = %q", V3.String())
	}
	// Files written by the v2 and v3 writers have the sizes their version names.
	for _, v := range []Version{V2, V3} {
		path := filepath.Join(t.TempDir(), "x.cow")
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		var w Writer
		if v == V2 {
			w, err = NewWriterV2(f, WriterOptions{})
		} else {
			w, err = NewWriterV3(f, WriterOptions{MaxBlocks: 4})
		}
		if err == nil {
			err = w.AddZeroBlocks(0, 1)
		}
		if err == nil {
			err = w.Finalize()
		}
		if err == nil {
			err = w.Close()
		}
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		r, err := Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		h := r.Header()
		r.Close()
		if h.Version() != v || int(h.HeaderSize) != v.HeaderSize() || int(h.OpSize) != v.OpSize() {
			t.Errorf("%v writer: version %v, header %d, op %d", v, h.Version(), h.HeaderSize, h.OpSize)
		}
	}
}
