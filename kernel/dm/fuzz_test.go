package dm

import (
	"encoding/binary"
	"testing"
)

func FuzzDecodeTargets(f *testing.F) {
	f.Add(kernelTargets([]Target{Zero(0, 8), Snapshot(8, 8, "/dev/vda", "/dev/vdb", true, 8)}), uint32(2))
	f.Add(kernelTargets([]Target{User(0, 8, "x")}), uint32(1))
	f.Add([]byte{}, uint32(0))
	f.Fuzz(func(t *testing.T, data []byte, count uint32) {
		ts, err := decodeTargets(data, count)
		if err != nil {
			return
		}
		if uint32(len(ts)) != count {
			t.Fatalf("decoded %d targets, want %d", len(ts), count)
		}
		// Whatever decodes must re-encode and decode to the same targets (when valid).
		valid := true
		for _, tg := range ts {
			if tg.Type == "" || tg.Length == 0 {
				valid = false
			}
		}
		if !valid || len(ts) == 0 {
			return
		}
		again, err := decodeTargets(kernelTargets(ts), count)
		if err != nil {
			t.Fatal(err)
		}
		for i := range ts {
			if again[i] != ts[i] {
				t.Fatalf("round trip %d: %+v != %+v", i, again[i], ts[i])
			}
		}
	})
}

func FuzzDecodeNameList(f *testing.F) {
	f.Add(append(nameListEntry(1, "a", 1, false), nameListEntry(2, "bb", 2, true)...))
	f.Add(make([]byte, 16))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := decodeNameList(data)
		if err == nil && len(l) > len(data)/12 {
			t.Fatalf("%d entries from %d bytes", len(l), len(data))
		}
	})
}

func FuzzDecodeVersions(f *testing.F) {
	f.Add(append(versionEntry("user", [3]uint32{1, 0, 0}, false), versionEntry("linear", [3]uint32{1, 4, 0}, true)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := decodeVersions(data)
		if err == nil && len(l) > len(data)/16 {
			t.Fatalf("%d entries from %d bytes", len(l), len(data))
		}
	})
}

func FuzzDecodeHeader(f *testing.F) {
	b, _ := encodeRequest(&header{Name: "n", UUID: "u"}, []byte("data"), 0)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, data, err := decodeHeader(b)
		if err != nil {
			return
		}
		if len(data) > len(b) || len(h.Name) > nameLen || len(h.UUID) > uuidLen {
			t.Fatalf("bad decode: %d data bytes from %d", len(data), len(b))
		}
		if len(b) >= 16 && binary.LittleEndian.Uint32(b[16:]) < ioctlHeaderSize && data != nil {
			t.Fatal("payload returned for data_start inside the header")
		}
	})
}

func FuzzParseSnapshotStatus(f *testing.F) {
	for _, s := range []string{"24/32768 16", "16/32768 16", "Invalid", "Merge failed", "1/2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		st, err := ParseSnapshotStatus(s)
		if err != nil {
			return
		}
		if !st.Invalid && !st.Overflow && !st.MergeFailed &&
			(st.MetadataSectors > st.SectorsAllocated || st.SectorsAllocated > st.TotalSectors) {
			t.Fatalf("inconsistent status accepted: %+v", st)
		}
	})
}

func FuzzParseTable(f *testing.F) {
	f.Add("0 8 zero\n8 8 linear /dev/vda 0\n")
	f.Add("0 8 user 0 8 name")
	f.Fuzz(func(t *testing.T, s string) {
		ts, err := ParseTable(s)
		if err != nil {
			return
		}
		var text string
		for _, tg := range ts {
			text += tg.String() + "\n"
		}
		again, err := ParseTable(text)
		if err != nil || len(again) != len(ts) {
			t.Fatalf("re-parse of %q: %v (%d vs %d)", text, err, len(again), len(ts))
		}
	})
}

func FuzzParseUserStatus(f *testing.F) {
	f.Add("1 0 ok")
	f.Add("0 3 lost")
	f.Fuzz(func(t *testing.T, s string) {
		ParseUserStatus(s)
	})
}
