package vabc

import (
	"encoding/binary"
	"encoding/json"
	"os"
)

// state is the resume record beside the COW (<partition>.cow.state). The
// file is a 16-byte label record (label u64 LE, its complement) followed by
// JSON. The JSON is written once per run (with rename); after each COW label
// only the record is rewritten in place (one 16-byte pwrite, so the per-label
// cost stays far below the COW's own fsync). A torn record reads as invalid
// and the partition starts over.
type state struct {
	Partition string `json:"partition"`
	ID        string `json:"id"` // manifest + settings
	Label     uint64 `json:"-"`
	// Complete is set once the COW is finalized (and verified, if asked):
	// a rerun skips the partition.
	Complete bool `json:"complete,omitempty"`
	Verified bool `json:"verified,omitempty"`
}

const labelRecordSize = 16

func labelRecord(l uint64) []byte {
	var b [labelRecordSize]byte
	binary.LittleEndian.PutUint64(b[:], l)
	binary.LittleEndian.PutUint64(b[8:], ^l)
	return b[:]
}

func loadState(path string) (state, bool) {
	var s state
	b, err := os.ReadFile(path)
	if err != nil || len(b) < labelRecordSize || json.Unmarshal(b[labelRecordSize:], &s) != nil {
		return s, false
	}
	l := binary.LittleEndian.Uint64(b)
	if binary.LittleEndian.Uint64(b[8:]) != ^l {
		return s, false
	}
	s.Label = l
	return s, true
}

// saveState replaces the state file and returns it open for label updates.
func saveState(path string, s state) (*os.File, error) {
	j, _ := json.Marshal(s)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(labelRecord(s.Label), j...), 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_RDWR, 0)
}

// saveLabel records that label is durable in the COW.
func saveLabel(f *os.File, label uint64) error {
	_, err := f.WriteAt(labelRecord(label), 0)
	return err
}
