package bootctl

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func newMisc(t *testing.T) (*Misc, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "misc")
	if err := os.WriteFile(p, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, p
}

func TestRollbackAfterFailedTries(t *testing.T) {
	m, _ := newMisc(t)
	m.Tries = 2
	steps := []struct {
		do   func() error
		want int // slot Boot must pick
	}{
		{nil, 0}, // factory: _a
		{func() error { return m.SetActive(1) }, 1}, // update installed: try _b
		{nil, 1}, // second (last) try
		{nil, 0}, // _b out of tries: back to _a
		{nil, 0},
	}
	for i, s := range steps {
		if s.do != nil {
			if err := s.do(); err != nil {
				t.Fatal(err)
			}
		}
		got, err := m.Boot()
		if err != nil || got != s.want {
			t.Fatalf("step %d: boot %d, %v; want %d", i, got, err, s.want)
		}
	}
}

func TestSuccessfulSlotKeepsBooting(t *testing.T) {
	m, _ := newMisc(t)
	m.Tries = 1
	m.SetActive(1)
	if s, _ := m.Boot(); s != 1 {
		t.Fatalf("boot %d", s)
	}
	if err := m.MarkSuccessful(1); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if s, _ := m.Boot(); s != 1 {
			t.Fatalf("boot %d: slot %d", i, s)
		}
	}
	if ok, _ := m.IsSuccessful(1); !ok {
		t.Fatal("not successful")
	}
	m.SetUnbootable(1)
	if s, _ := m.Boot(); s != 0 {
		t.Fatalf("after SetUnbootable: slot %d", s)
	}
}

func TestMergeStatusBytes(t *testing.T) {
	m, p := newMisc(t)
	if err := m.SetMergeStatus(0, MergeSnapshotted); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	want := append([]byte{2, 0xb0, 0x0a, 0x74, 0x56, 2, 0}, make([]byte, 57)...)
	if got := b[VABOffset : VABOffset+VABSize]; !bytes.Equal(got, want) {
		t.Fatalf("misc_virtual_ab_message % x", got)
	}
	// Read back on the source slot: the slot reverted ⇒ NONE; on the target
	// slot: SNAPSHOTTED.
	if s, _ := m.GetMergeStatus(0); s != MergeNone {
		t.Fatalf("source slot sees %v", s)
	}
	if s, _ := m.GetMergeStatus(1); s != MergeSnapshotted {
		t.Fatalf("target slot sees %v", s)
	}
	// A corrupted slot record (CRC) falls back to the factory state.
	b[ControlOffset+12] ^= 0xff
	os.WriteFile(p, b, 0o644)
	c, err := m.Read()
	if err != nil || c.Slots[0] != (Slot{Priority: 15, Successful: true}) {
		t.Fatalf("corrupt record: %+v %v", c, err)
	}
}
