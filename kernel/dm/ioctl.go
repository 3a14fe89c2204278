// Package dm controls Linux device-mapper through /dev/mapper/control ioctls, in pure Go
// (golang.org/x/sys/unix only, no libdevmapper, no cgo).
//
// The ioctl structures (struct dm_ioctl, dm_target_spec, dm_name_list, dm_target_versions
// from <linux/dm-ioctl.h>) are encoded and decoded explicitly into byte slices; see
// vm-harness.md §7 for the measured layout. Without udev nobody creates /dev/mapper/<name>,
// so [Control.CreateDevice] makes the node itself (vm-harness.md §12 trap 1).
//
// Every kernel failure is returned as an *os.PathError whose Op is the ioctl name
// (DM_TABLE_LOAD, ...), whose Path is the control node, and whose Err wraps the errno
// together with the device name, so errors.Is(err, unix.ENXIO) works.
package dm

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Layout of struct dm_ioctl (312 bytes, all fields little-endian on x86).
const (
	ioctlHeaderSize = 312
	offVersion      = 0   // u32[3]
	offDataSize     = 12  // u32: size of the whole buffer
	offDataStart    = 16  // u32: offset of the payload from the start of the buffer
	offTargetCount  = 20  // u32
	offOpenCount    = 24  // s32
	offFlags        = 28  // u32
	offEventNr      = 32  // u32
	offDev          = 40  // u64 (huge_encode_dev)
	offName         = 48  // char[128]
	offUUID         = 176 // char[129]

	nameLen = 128
	uuidLen = 129

	targetSpecSize = 40 // struct dm_target_spec
	targetTypeLen  = 16
)

// Interface version we speak. The kernel accepts any request whose major matches and whose
// minor is not newer than its own (6.1 reports 4.47.0).
var requestVersion = [3]uint32{4, 0, 0}

// Ioctl command numbers (the nr of _IOWR(0xfd, nr, struct dm_ioctl)).
type command uint32

const (
	cmdVersion        command = 0
	cmdRemoveAll      command = 1
	cmdListDevices    command = 2
	cmdDevCreate      command = 3
	cmdDevRemove      command = 4
	cmdDevRename      command = 5
	cmdDevSuspend     command = 6
	cmdDevStatus      command = 7
	cmdDevWait        command = 8
	cmdTableLoad      command = 9
	cmdTableClear     command = 10
	cmdTableDeps      command = 11
	cmdTableStatus    command = 12
	cmdListVersions   command = 13
	cmdTargetMsg      command = 14
	cmdDevSetGeometry command = 15
)

var commandNames = [...]string{
	cmdVersion: "DM_VERSION", cmdRemoveAll: "DM_REMOVE_ALL", cmdListDevices: "DM_LIST_DEVICES",
	cmdDevCreate: "DM_DEV_CREATE", cmdDevRemove: "DM_DEV_REMOVE", cmdDevRename: "DM_DEV_RENAME",
	cmdDevSuspend: "DM_DEV_SUSPEND", cmdDevStatus: "DM_DEV_STATUS", cmdDevWait: "DM_DEV_WAIT",
	cmdTableLoad: "DM_TABLE_LOAD", cmdTableClear: "DM_TABLE_CLEAR", cmdTableDeps: "DM_TABLE_DEPS",
	cmdTableStatus: "DM_TABLE_STATUS", cmdListVersions: "DM_LIST_VERSIONS",
	cmdTargetMsg: "DM_TARGET_MSG", cmdDevSetGeometry: "DM_DEV_SET_GEOMETRY",
}

func (c command) String() string {
	if int(c) < len(commandNames) && commandNames[c] != "" {
		return commandNames[c]
	}
	return fmt.Sprintf("DM_IOCTL_%d", uint32(c))
}

// request returns _IOWR(0xfd, nr, struct dm_ioctl) = dir 3 << 30 | size 312 << 16 | 0xfd << 8 | nr.
func (c command) request() uint {
	return 3<<30 | ioctlHeaderSize<<16 | 0xfd<<8 | uint(c)
}

// Flags of struct dm_ioctl.
const (
	FlagReadOnly            = 1 << 0
	FlagSuspend             = 1 << 1
	FlagPersistentDev       = 1 << 3
	FlagStatusTable         = 1 << 4
	FlagActivePresent       = 1 << 5
	FlagInactivePresent     = 1 << 6
	FlagBufferFull          = 1 << 8
	FlagSkipBdget           = 1 << 9
	FlagSkipLockfs          = 1 << 10
	FlagNoFlush             = 1 << 11
	FlagQueryInactiveTable  = 1 << 12
	FlagUeventGenerated     = 1 << 13
	FlagUUID                = 1 << 14
	FlagSecureData          = 1 << 15
	FlagDataOut             = 1 << 16
	FlagDeferredRemove      = 1 << 17
	FlagInternalSuspend     = 1 << 18
	FlagIMAMeasurement      = 1 << 19
	nameListFlagHasUUID     = 1 << 0
	nameListFlagDoesntHaveU = 1 << 1
)

// header is the decoded fixed part of struct dm_ioctl.
type header struct {
	Version     [3]uint32
	DataSize    uint32
	DataStart   uint32
	TargetCount uint32
	OpenCount   int32
	Flags       uint32
	EventNr     uint32
	Dev         uint64
	Name        string
	UUID        string
}

// encodeRequest builds a request buffer of bufSize bytes (at least ioctlHeaderSize) holding
// the header and payload, with data_start right after the header.
func encodeRequest(h *header, payload []byte, bufSize int) ([]byte, error) {
	if len(h.Name) >= nameLen {
		return nil, fmt.Errorf("device name %q longer than %d bytes", h.Name, nameLen-1)
	}
	if len(h.UUID) >= uuidLen {
		return nil, fmt.Errorf("uuid %q longer than %d bytes", h.UUID, uuidLen-1)
	}
	if bytes.IndexByte([]byte(h.Name), 0) >= 0 || bytes.IndexByte([]byte(h.UUID), 0) >= 0 {
		return nil, fmt.Errorf("device name or uuid contains a NUL byte")
	}
	need := ioctlHeaderSize + len(payload)
	if bufSize < need {
		bufSize = need
	}
	b := make([]byte, bufSize)
	le := binary.LittleEndian
	for i, v := range requestVersion {
		le.PutUint32(b[offVersion+4*i:], v)
	}
	le.PutUint32(b[offDataSize:], uint32(bufSize))
	le.PutUint32(b[offDataStart:], ioctlHeaderSize)
	le.PutUint32(b[offTargetCount:], h.TargetCount)
	le.PutUint32(b[offFlags:], h.Flags)
	le.PutUint32(b[offEventNr:], h.EventNr)
	le.PutUint64(b[offDev:], h.Dev)
	copy(b[offName:offName+nameLen], h.Name)
	copy(b[offUUID:offUUID+uuidLen], h.UUID)
	copy(b[ioctlHeaderSize:], payload)
	return b, nil
}

// decodeHeader parses a reply buffer's fixed header and returns it with the payload
// (bytes data_start..data_size, bounded by the buffer).
func decodeHeader(b []byte) (header, []byte, error) {
	var h header
	if len(b) < ioctlHeaderSize {
		return h, nil, fmt.Errorf("dm_ioctl reply is %d bytes, want at least %d", len(b), ioctlHeaderSize)
	}
	le := binary.LittleEndian
	for i := range h.Version {
		h.Version[i] = le.Uint32(b[offVersion+4*i:])
	}
	h.DataSize = le.Uint32(b[offDataSize:])
	h.DataStart = le.Uint32(b[offDataStart:])
	h.TargetCount = le.Uint32(b[offTargetCount:])
	h.OpenCount = int32(le.Uint32(b[offOpenCount:]))
	h.Flags = le.Uint32(b[offFlags:])
	h.EventNr = le.Uint32(b[offEventNr:])
	h.Dev = le.Uint64(b[offDev:])
	h.Name = cString(b[offName : offName+nameLen])
	h.UUID = cString(b[offUUID : offUUID+uuidLen])
	start, end := int64(h.DataStart), int64(h.DataSize)
	if end > int64(len(b)) {
		end = int64(len(b))
	}
	if start < ioctlHeaderSize || start > end {
		return h, nil, nil
	}
	return h, b[start:end], nil
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func align8(n int) int { return (n + 7) &^ 7 }

// encodeTargets encodes TABLE_LOAD's payload: one dm_target_spec per target, each followed
// by its NUL-terminated parameter string and padded to 8 bytes. In this direction "next" is
// the distance from the start of this spec to the start of the next one.
func encodeTargets(ts []Target) ([]byte, error) {
	var out []byte
	le := binary.LittleEndian
	for i, t := range ts {
		if t.Type == "" || len(t.Type) >= targetTypeLen {
			return nil, fmt.Errorf("target %d: type %q must be 1..%d bytes", i, t.Type, targetTypeLen-1)
		}
		if bytes.IndexByte([]byte(t.Params), 0) >= 0 || bytes.IndexByte([]byte(t.Type), 0) >= 0 {
			return nil, fmt.Errorf("target %d (%s): NUL byte in type or parameters", i, t.Type)
		}
		if t.Length == 0 {
			return nil, fmt.Errorf("target %d (%s): zero length", i, t.Type)
		}
		size := align8(targetSpecSize + len(t.Params) + 1)
		spec := make([]byte, size)
		le.PutUint64(spec[0:], t.Start)
		le.PutUint64(spec[8:], t.Length)
		if i < len(ts)-1 {
			le.PutUint32(spec[20:], uint32(size))
		}
		copy(spec[24:24+targetTypeLen], t.Type)
		copy(spec[targetSpecSize:], t.Params)
		out = append(out, spec...)
	}
	return out, nil
}

// decodeTargets parses count dm_target_spec entries of a TABLE_STATUS/DEV_WAIT reply. In
// this direction the kernel sets "next" to the offset of the following spec from the start
// of the payload (not from the current spec, as on input).
func decodeTargets(data []byte, count uint32) ([]Target, error) {
	le := binary.LittleEndian
	if uint64(count) > uint64(len(data))/targetSpecSize {
		return nil, fmt.Errorf("target count %d does not fit in %d payload bytes", count, len(data))
	}
	ts := make([]Target, 0, count)
	off := 0
	for i := uint32(0); i < count; i++ {
		if off < 0 || off+targetSpecSize > len(data) {
			return nil, fmt.Errorf("target spec %d at payload offset %d: truncated (payload %d bytes)", i, off, len(data))
		}
		spec := data[off:]
		t := Target{
			Start:  le.Uint64(spec[0:]),
			Length: le.Uint64(spec[8:]),
			Type:   cString(spec[24 : 24+targetTypeLen]),
		}
		params := spec[targetSpecSize:]
		end := bytes.IndexByte(params, 0)
		if end < 0 {
			return nil, fmt.Errorf("target spec %d at payload offset %d: parameters not NUL-terminated", i, off)
		}
		t.Params = string(params[:end])
		ts = append(ts, t)
		next := int(le.Uint32(spec[20:]))
		if i+1 < count {
			if next <= off {
				return nil, fmt.Errorf("target spec %d at payload offset %d: next offset %d does not advance", i, off, next)
			}
			off = next
		}
	}
	return ts, nil
}

// NameListEntry is one device of DM_LIST_DEVICES.
type NameListEntry struct {
	Name    string
	Dev     uint64 // huge_encode_dev; use unix.Major / unix.Minor
	EventNr uint32 // only with interface >= 4.37; 0 otherwise
	HasUUID bool
}

// decodeNameList parses the dm_name_list chain: u64 dev, u32 next (relative to this entry,
// 0 = last), NUL-terminated name; newer kernels append (8-aligned) u32 event_nr, u32 flags.
// A single entry with dev == 0 means "no devices".
func decodeNameList(data []byte) ([]NameListEntry, error) {
	le := binary.LittleEndian
	var out []NameListEntry
	off := 0
	for n := 0; ; n++ {
		if off+12 > len(data) {
			if n == 0 && len(data) == 0 {
				return nil, nil
			}
			return nil, fmt.Errorf("name list entry %d at offset %d: truncated (payload %d bytes)", n, off, len(data))
		}
		e := data[off:]
		dev := le.Uint64(e[0:])
		next := int(le.Uint32(e[8:]))
		if dev == 0 && n == 0 {
			return nil, nil
		}
		nameEnd := bytes.IndexByte(e[12:], 0)
		if nameEnd < 0 {
			return nil, fmt.Errorf("name list entry %d at offset %d: name not NUL-terminated", n, off)
		}
		ent := NameListEntry{Name: string(e[12 : 12+nameEnd]), Dev: dev}
		extra := align8(off+12+nameEnd+1) - off
		limit := len(e)
		if next > 0 && next < limit {
			limit = next
		}
		if extra+8 <= limit {
			ent.EventNr = le.Uint32(e[extra:])
			ent.HasUUID = le.Uint32(e[extra+4:])&nameListFlagHasUUID != 0
		}
		out = append(out, ent)
		if next == 0 {
			return out, nil
		}
		if next < 12 || off+next > len(data) {
			return nil, fmt.Errorf("name list entry %d at offset %d: bad next offset %d", n, off, next)
		}
		off += next
	}
}

// TargetVersion is one entry of DM_LIST_VERSIONS ("dmsetup targets").
type TargetVersion struct {
	Name    string
	Version [3]uint32
}

func (v TargetVersion) String() string {
	return fmt.Sprintf("%s v%d.%d.%d", v.Name, v.Version[0], v.Version[1], v.Version[2])
}

// decodeVersions parses the dm_target_versions chain: u32 next (relative, 0 = last),
// u32 version[3], NUL-terminated name at +16.
func decodeVersions(data []byte) ([]TargetVersion, error) {
	le := binary.LittleEndian
	var out []TargetVersion
	off := 0
	for n := 0; ; n++ {
		if off+16 > len(data) {
			if n == 0 && len(data) == 0 {
				return nil, nil
			}
			return nil, fmt.Errorf("target version entry %d at offset %d: truncated (payload %d bytes)", n, off, len(data))
		}
		e := data[off:]
		next := int(le.Uint32(e[0:]))
		v := TargetVersion{Version: [3]uint32{le.Uint32(e[4:]), le.Uint32(e[8:]), le.Uint32(e[12:])}}
		end := bytes.IndexByte(e[16:], 0)
		if end < 0 {
			return nil, fmt.Errorf("target version entry %d at offset %d: name not NUL-terminated", n, off)
		}
		v.Name = string(e[16 : 16+end])
		out = append(out, v)
		if next == 0 {
			return out, nil
		}
		if next < 16 || off+next > len(data) {
			return nil, fmt.Errorf("target version entry %d at offset %d: bad next offset %d", n, off, next)
		}
		off += next
	}
}
