package state

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzParseState parses arbitrary bytes as both messages; whatever parses
// must re-encode canonically and decode to the same value.
func FuzzParseState(f *testing.F) {
	f.Add((&UpdateStatus{State: Merging, UsingSnapuserd: true, MergePhase: SecondPhase, UserspaceSnapshots: true}).Marshal())
	f.Add((&SnapshotStatus{Name: "system_b", State: SnapshotCreated, DeviceSize: 8 << 20, CowFileSize: 4096, UsingSnapuserd: true}).Marshal())
	f.Add([]byte("merge-needs-reboot"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := UnmarshalSnapshotStatus(b); err == nil {
			enc := s.Marshal()
			s2, err := UnmarshalSnapshotStatus(enc)
			if err != nil || !reflect.DeepEqual(s, s2) {
				t.Fatalf("snapshot status round trip: %+v → %+v, %v", s, s2, err)
			}
			if !bytes.Equal(s2.Marshal(), enc) {
				t.Fatal("snapshot status encoding not canonical")
			}
		}
		u, err := UnmarshalUpdateStatus(b)
		if err != nil {
			t.Fatalf("UnmarshalUpdateStatus never fails (legacy fallback), got %v", err)
		}
		enc := u.Marshal()
		u2, err := UnmarshalUpdateStatus(enc)
		if err != nil || !reflect.DeepEqual(u, u2) {
			t.Fatalf("update status round trip: %+v → %+v, %v", u, u2, err)
		}
	})
}
