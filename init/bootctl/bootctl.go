// Package bootctl is the boot-control state in the misc partition: the A/B
// slot records a bootloader and the boot-control HAL share, and the Virtual
// A/B merge status (snapshot-lifecycle.md §2.6).
//
// The merge status is AOSP's misc_virtual_ab_message, byte for byte: 64
// bytes at offset 32 KiB — version 2, magic 0x56740AB0 (LE), merge_status,
// source_slot, 57 reserved bytes. The slot records follow the layout of
// AOSP's default boot-control library (struct bootloader_control at offset
// 2 KiB: suffix, magic "BCAB", version 1, slot count, two bytes per slot
// with priority/tries/successful, CRC-32 of the first 28 bytes); the spec's
// VM profile only requires the rules to match ([BC-LIB]: setActiveBootSlot
// gives priority 15 and Options.Tries tries and caps the others at 14;
// markBootSuccessful sets successful and tries 1; setSlotAsUnbootable
// clears both).
//
// Boot picks the slot a bootloader would: the highest-priority bootable one
// (successful or tries left), spending one try when it is not yet
// successful; vabc-init runs it first, since the VM has no bootloader.
package bootctl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
)

// MergeStatus is the boot-control HAL's MergeStatus (MergeStatus.aidl).
type MergeStatus uint8

// MergeStatus values.
const (
	MergeNone        MergeStatus = 0
	MergeUnknown     MergeStatus = 1
	MergeSnapshotted MergeStatus = 2
	MergeMerging     MergeStatus = 3
	MergeCancelled   MergeStatus = 4
)

func (m MergeStatus) String() string {
	switch m {
	case MergeNone:
		return "NONE"
	case MergeUnknown:
		return "UNKNOWN"
	case MergeSnapshotted:
		return "SNAPSHOTTED"
	case MergeMerging:
		return "MERGING"
	case MergeCancelled:
		return "CANCELLED"
	}
	return fmt.Sprintf("MergeStatus(%d)", uint8(m))
}

// Layout in misc.
const (
	ControlOffset = 2048      // bootloader_control (in bootloader_message_ab.slot_suffix)
	ControlSize   = 32        // bytes
	VABOffset     = 32 * 1024 // misc_virtual_ab_message
	VABSize       = 64
	vabVersion    = 2
	vabMagic      = 0x56740AB0
	controlMagic  = 0x42414342 // "BCAB"
	controlVer    = 1
	numSlots      = 2
)

// Slot is one slot record.
type Slot struct {
	Priority   uint8 // 0..15; 0 = not bootable
	Tries      uint8 // 0..7
	Successful bool
}

// Bootable reports whether a bootloader may try the slot.
func (s Slot) Bootable() bool { return s.Priority > 0 && (s.Successful || s.Tries > 0) }

// Control is the slot state plus the merge status.
type Control struct {
	Slots       [numSlots]Slot
	MergeStatus MergeStatus
	SourceSlot  uint8
}

// Suffix is a slot's suffix (_a, _b).
func Suffix(slot int) string { return "_" + string(rune('a'+slot)) }

// SlotOf parses a suffix.
func SlotOf(suffix string) (int, error) {
	if len(suffix) == 2 && suffix[0] == '_' && suffix[1] >= 'a' && int(suffix[1]-'a') < numSlots {
		return int(suffix[1] - 'a'), nil
	}
	return 0, fmt.Errorf("bootctl: bad slot suffix %q", suffix)
}

// Misc is an open misc partition.
type Misc struct {
	f     *os.File
	Tries uint8 // tries given by SetActive (default 6)
}

// Open opens the misc device or file read-write.
func Open(path string) (*Misc, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return &Misc{f: f, Tries: 6}, nil
}

// Close closes misc.
func (m *Misc) Close() error { return m.f.Close() }

// ErrNoSlot is returned when no slot is bootable.
var ErrNoSlot = errors.New("bootctl: no bootable slot")

// Read returns the records; a missing record (bad magic or CRC) reads as a
// factory state: slot _a active and successful, _b empty. A missing merge
// message reads as NONE.
func (m *Misc) Read() (Control, error) {
	var c Control
	b := make([]byte, ControlSize)
	if _, err := m.f.ReadAt(b, ControlOffset); err != nil {
		return c, fmt.Errorf("bootctl: read slot records at %d: %w", ControlOffset, err)
	}
	if binary.LittleEndian.Uint32(b[4:]) == controlMagic && b[8] == controlVer && crc32.ChecksumIEEE(b[:28]) == binary.LittleEndian.Uint32(b[28:]) {
		for i := 0; i < numSlots; i++ {
			v := b[12+2*i]
			c.Slots[i] = Slot{Priority: v & 0xf, Tries: (v >> 4) & 7, Successful: v&0x80 != 0}
		}
	} else {
		c.Slots[0] = Slot{Priority: 15, Tries: 0, Successful: true}
	}
	v := make([]byte, VABSize)
	if _, err := m.f.ReadAt(v, VABOffset); err != nil {
		return c, fmt.Errorf("bootctl: read merge status at %d: %w", VABOffset, err)
	}
	if v[0] == vabVersion && binary.LittleEndian.Uint32(v[1:]) == vabMagic {
		c.MergeStatus, c.SourceSlot = MergeStatus(v[5]), v[6]
	}
	return c, nil
}

// Write stores both records and syncs misc.
func (m *Misc) Write(c Control) error {
	b := make([]byte, ControlSize)
	copy(b, Suffix(activeOf(c)))
	binary.LittleEndian.PutUint32(b[4:], controlMagic)
	b[8] = controlVer
	b[9] = numSlots & 7
	b[10] = uint8(c.MergeStatus) & 7
	for i := 0; i < numSlots; i++ {
		s := c.Slots[i]
		v := s.Priority&0xf | (s.Tries&7)<<4
		if s.Successful {
			v |= 0x80
		}
		b[12+2*i] = v
	}
	binary.LittleEndian.PutUint32(b[28:], crc32.ChecksumIEEE(b[:28]))
	if _, err := m.f.WriteAt(b, ControlOffset); err != nil {
		return err
	}
	v := make([]byte, VABSize)
	v[0] = vabVersion
	binary.LittleEndian.PutUint32(v[1:], vabMagic)
	v[5], v[6] = uint8(c.MergeStatus), c.SourceSlot
	if _, err := m.f.WriteAt(v, VABOffset); err != nil {
		return err
	}
	return m.f.Sync()
}

func activeOf(c Control) int {
	best := 0
	for i := 1; i < numSlots; i++ {
		if c.Slots[i].Priority > c.Slots[best].Priority {
			best = i
		}
	}
	return best
}

// Boot is the bootloader's choice: the highest-priority bootable slot; a
// slot not yet marked successful loses one try (persisted before booting).
func (m *Misc) Boot() (int, error) {
	c, err := m.Read()
	if err != nil {
		return 0, err
	}
	best := -1
	for i := 0; i < numSlots; i++ {
		if c.Slots[i].Bootable() && (best < 0 || c.Slots[i].Priority > c.Slots[best].Priority) {
			best = i
		}
	}
	if best < 0 {
		return 0, ErrNoSlot
	}
	if !c.Slots[best].Successful {
		c.Slots[best].Tries--
	}
	return best, m.Write(c)
}

// SetActive is setActiveBootSlot.
func (m *Misc) SetActive(slot int) error {
	c, err := m.Read()
	if err != nil {
		return err
	}
	for i := range c.Slots {
		if c.Slots[i].Priority > 14 {
			c.Slots[i].Priority = 14
		}
	}
	c.Slots[slot] = Slot{Priority: 15, Tries: m.Tries}
	return m.Write(c)
}

// MarkSuccessful is markBootSuccessful for the current slot.
func (m *Misc) MarkSuccessful(slot int) error {
	c, err := m.Read()
	if err != nil {
		return err
	}
	c.Slots[slot].Successful, c.Slots[slot].Tries = true, 1
	return m.Write(c)
}

// IsSuccessful is isSlotMarkedSuccessful.
func (m *Misc) IsSuccessful(slot int) (bool, error) {
	c, err := m.Read()
	return c.Slots[slot].Successful && c.Slots[slot].Tries != 0, err
}

// SetUnbootable is setSlotAsUnbootable.
func (m *Misc) SetUnbootable(slot int) error {
	c, err := m.Read()
	if err != nil {
		return err
	}
	c.Slots[slot].Successful, c.Slots[slot].Tries = false, 0
	return m.Write(c)
}

// SetMergeStatus is setSnapshotMergeStatus, recorded against the current slot.
func (m *Misc) SetMergeStatus(current int, s MergeStatus) error {
	c, err := m.Read()
	if err != nil {
		return err
	}
	c.MergeStatus, c.SourceSlot = s, uint8(current)
	return m.Write(c)
}

// GetMergeStatus is getSnapshotMergeStatus: SNAPSHOTTED recorded on the
// slot now running means the slot reverted, and reads as NONE.
func (m *Misc) GetMergeStatus(current int) (MergeStatus, error) {
	c, err := m.Read()
	if err != nil {
		return MergeUnknown, err
	}
	if c.MergeStatus == MergeSnapshotted && int(c.SourceSlot) == current {
		return MergeNone, nil
	}
	return c.MergeStatus, nil
}
