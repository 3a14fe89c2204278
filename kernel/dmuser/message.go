package dmuser

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// HeaderSize is the size of struct dm_user_message without its payload.
const HeaderSize = 40

// SectorSize is the unit of Header.Sector.
const SectorSize = 512

// Byte offsets of the header fields (all little-endian u64).
const (
	offSeq    = 0
	offType   = 8
	offFlags  = 16
	offSector = 24
	offLen    = 32
)

// Type is a request type (kernel → daemon) or, in a response, a Status.
type Type uint64

// Request types (DM_USER_REQ_MAP_*).
const (
	ReqRead         Type = 0
	ReqWrite        Type = 1
	ReqFlush        Type = 2
	ReqDiscard      Type = 3
	ReqSecureErase  Type = 4
	ReqWriteSame    Type = 5
	ReqWriteZeroes  Type = 6
	ReqZoneOpen     Type = 7
	ReqZoneClose    Type = 8
	ReqZoneFinish   Type = 9
	ReqZoneAppend   Type = 10
	ReqZoneReset    Type = 11
	ReqZoneResetAll Type = 12
)

var typeNames = [...]string{
	"READ", "WRITE", "FLUSH", "DISCARD", "SECURE_ERASE", "WRITE_SAME",
	"WRITE_ZEROES", "ZONE_OPEN", "ZONE_CLOSE", "ZONE_FINISH", "ZONE_APPEND",
	"ZONE_RESET", "ZONE_RESET_ALL",
}

func (t Type) String() string {
	if t < Type(len(typeNames)) {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(%d)", uint64(t))
}

// Status is the type field of a response (DM_USER_RESP_*).
type Status uint64

// Response status values.
const (
	StatusSuccess     Status = 0
	StatusError       Status = 1
	StatusUnsupported Status = 2
)

func (s Status) String() string {
	switch s {
	case StatusSuccess:
		return "SUCCESS"
	case StatusError:
		return "ERROR"
	case StatusUnsupported:
		return "UNSUPPORTED"
	}
	return fmt.Sprintf("Status(%d)", uint64(s))
}

// Flags mirrors the block layer's REQ_* bits (DM_USER_REQ_MAP_FLAG_*).
type Flags uint64

// Request flag bits.
const (
	FlagFailfastDev       Flags = 0x00001
	FlagFailfastTransport Flags = 0x00002
	FlagFailfastDriver    Flags = 0x00004
	FlagSync              Flags = 0x00008
	FlagMeta              Flags = 0x00010
	FlagPrio              Flags = 0x00020
	FlagNoMerge           Flags = 0x00040
	FlagIdle              Flags = 0x00080
	FlagIntegrity         Flags = 0x00100
	FlagFUA               Flags = 0x00200
	FlagPreflush          Flags = 0x00400
	FlagRahead            Flags = 0x00800
	FlagBackground        Flags = 0x01000
	FlagNoWait            Flags = 0x02000
	FlagCgroupPunt        Flags = 0x04000
	FlagNoUnmap           Flags = 0x08000
	FlagHiPri             Flags = 0x10000
	FlagDrv               Flags = 0x20000
	FlagSwap              Flags = 0x40000
)

var flagNames = []struct {
	f    Flags
	name string
}{
	{FlagFailfastDev, "FAILFAST_DEV"}, {FlagFailfastTransport, "FAILFAST_TRANSPORT"},
	{FlagFailfastDriver, "FAILFAST_DRIVER"}, {FlagSync, "SYNC"}, {FlagMeta, "META"},
	{FlagPrio, "PRIO"}, {FlagNoMerge, "NOMERGE"}, {FlagIdle, "IDLE"},
	{FlagIntegrity, "INTEGRITY"}, {FlagFUA, "FUA"}, {FlagPreflush, "PREFLUSH"},
	{FlagRahead, "RAHEAD"}, {FlagBackground, "BACKGROUND"}, {FlagNoWait, "NOWAIT"},
	{FlagCgroupPunt, "CGROUP_PUNT"}, {FlagNoUnmap, "NOUNMAP"}, {FlagHiPri, "HIPRI"},
	{FlagDrv, "DRV"}, {FlagSwap, "SWAP"},
}

func (f Flags) String() string {
	if f == 0 {
		return "0"
	}
	var parts []string
	for _, n := range flagNames {
		if f&n.f != 0 {
			parts = append(parts, n.name)
			f &^= n.f
		}
	}
	if f != 0 {
		parts = append(parts, fmt.Sprintf("%#x", uint64(f)))
	}
	return strings.Join(parts, "|")
}

// Header is struct dm_user_message without the trailing payload. In a
// request Type holds a request Type; in a response it holds a Status.
type Header struct {
	Seq    uint64
	Type   uint64
	Flags  Flags
	Sector uint64 // 512-byte units
	Len    uint64 // bytes
}

func (h Header) String() string {
	return fmt.Sprintf("seq=%d type=%s flags=%s sector=%d len=%d",
		h.Seq, Type(h.Type), h.Flags, h.Sector, h.Len)
}

// UnmarshalBinary decodes a header from exactly HeaderSize bytes or more
// (extra bytes are not looked at).
func (h *Header) UnmarshalBinary(b []byte) error {
	if len(b) < HeaderSize {
		return fmt.Errorf("dmuser: short header: %d bytes, need %d", len(b), HeaderSize)
	}
	h.Seq = binary.LittleEndian.Uint64(b[offSeq:])
	h.Type = binary.LittleEndian.Uint64(b[offType:])
	h.Flags = Flags(binary.LittleEndian.Uint64(b[offFlags:]))
	h.Sector = binary.LittleEndian.Uint64(b[offSector:])
	h.Len = binary.LittleEndian.Uint64(b[offLen:])
	return nil
}

// AppendBinary appends the 40-byte encoding of h to b.
func (h Header) AppendBinary(b []byte) ([]byte, error) {
	b = binary.LittleEndian.AppendUint64(b, h.Seq)
	b = binary.LittleEndian.AppendUint64(b, h.Type)
	b = binary.LittleEndian.AppendUint64(b, uint64(h.Flags))
	b = binary.LittleEndian.AppendUint64(b, h.Sector)
	b = binary.LittleEndian.AppendUint64(b, h.Len)
	return b, nil
}

// put encodes h into b[:HeaderSize].
func (h Header) put(b []byte) {
	binary.LittleEndian.PutUint64(b[offSeq:], h.Seq)
	binary.LittleEndian.PutUint64(b[offType:], h.Type)
	binary.LittleEndian.PutUint64(b[offFlags:], uint64(h.Flags))
	binary.LittleEndian.PutUint64(b[offSector:], h.Sector)
	binary.LittleEndian.PutUint64(b[offLen:], h.Len)
}

// hasPayload reports whether a request of type t carries Len bytes of data
// after its header in the daemon's read stream. dm-user copies bio data to
// userspace only for REQ_OP_WRITE; FLUSH, DISCARD, SECURE_ERASE, WRITE_SAME and
// WRITE_ZEROES carry just the extent (dm-user.c bio_bytes_needed_to_user), and
// zone operations are never passed to userspace.
func (t Type) hasPayload() bool { return t == ReqWrite }

// responseHasData reports whether a SUCCESS response to a request of type t
// carries Len bytes after the header (only reads do).
func (t Type) responseHasData() bool { return t == ReqRead }
