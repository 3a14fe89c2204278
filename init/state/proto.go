// Package state is libsnapshot's on-disk snapshot state under the metadata
// directory D (/metadata/ota on a device): the SnapshotUpdateStatus in D/state,
// one SnapshotStatus per snapshot in D/snapshots/<P>, the indicator files, the
// atomic write procedure (temp + fsync + rename + fsync dir) and the flock on
// D (snapshot-lifecycle.md §1, §2).
//
// The messages are encoded with protowire field by field, with AOSP's field
// numbers (fs_mgr/libsnapshot/android/snapshot/snapshot.proto, proto3):
// ascending field order, default values omitted, so a None state is 0 bytes.
// Readers accept any valid proto3 encoding and skip unknown fields.
package state

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// SnapshotState is a snapshot's state (SnapshotStatus.state).
type SnapshotState int32

// SnapshotState values (snapshot.proto SnapshotState).
const (
	SnapshotNone           SnapshotState = 0
	SnapshotCreated        SnapshotState = 1
	SnapshotMerging        SnapshotState = 2
	SnapshotMergeCompleted SnapshotState = 3
)

var snapshotStateNames = map[SnapshotState]string{0: "NONE", 1: "CREATED", 2: "MERGING", 3: "MERGE_COMPLETED"}

func (s SnapshotState) String() string {
	if n, ok := snapshotStateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("SnapshotState(%d)", int32(s))
}

// UpdateState is the global update state (SnapshotUpdateStatus.state).
type UpdateState int32

// UpdateState values (snapshot.proto UpdateState).
const (
	None             UpdateState = 0
	Initiated        UpdateState = 1
	Unverified       UpdateState = 2
	Merging          UpdateState = 3
	MergeNeedsReboot UpdateState = 4
	MergeCompleted   UpdateState = 5
	MergeFailed      UpdateState = 6
	Cancelled        UpdateState = 7
)

// updateStateNames are the enum names; legacyTokens the old text format of
// D/state (§1.7).
var (
	updateStateNames = []string{"None", "Initiated", "Unverified", "Merging", "MergeNeedsReboot", "MergeCompleted", "MergeFailed", "Cancelled"}
	legacyTokens     = []string{"none", "initiated", "unverified", "merging", "merge-needs-reboot", "merge-completed", "merge-failed", "cancelled"}
)

func (s UpdateState) String() string {
	if s >= 0 && int(s) < len(updateStateNames) {
		return updateStateNames[s]
	}
	return fmt.Sprintf("UpdateState(%d)", int32(s))
}

// MergePhase is SnapshotUpdateStatus.merge_phase.
type MergePhase int32

// MergePhase values.
const (
	NoMerge     MergePhase = 0
	FirstPhase  MergePhase = 1
	SecondPhase MergePhase = 2
)

// MergeFailureCode is SnapshotUpdateStatus.merge_failure_code (values 14–20
// are reserved: Android 12–14 consistency checks).
type MergeFailureCode int32

// MergeFailureCode values used by this package's callers.
const (
	FailOk                  MergeFailureCode = 0
	FailReadStatus          MergeFailureCode = 1
	FailUnknownTable        MergeFailureCode = 3
	FailAcquireLock         MergeFailureCode = 6
	FailListSnapshots       MergeFailureCode = 7
	FailWriteStatus         MergeFailureCode = 8
	FailUnknownTargetType   MergeFailureCode = 9
	FailQuerySnapshotStatus MergeFailureCode = 10
	FailExpectedMergeTarget MergeFailureCode = 11
	FailUnmergedSectors     MergeFailureCode = 12
	FailUnexpectedState     MergeFailureCode = 13
)

// SnapshotStatus is the content of D/snapshots/<P> (§1.2). Field numbers in
// the comments.
type SnapshotStatus struct {
	Name                   string        // 1
	State                  SnapshotState // 2
	DeviceSize             uint64        // 3 bytes of the target partition
	SnapshotSize           uint64        // 4
	CowPartitionSize       uint64        // 5 bytes of <P>-cow in super
	CowFileSize            uint64        // 6 bytes of <P>-cow-img on /data
	SectorsAllocated       uint64        // 7 dm-snapshot only
	MetadataSectors        uint64        // 8 dm-snapshot only
	UsingSnapuserd         bool          // 9 (compression_enabled before Android 14)
	OldPartitionSize       uint64        // 10 > 0 ⇒ <P>-src is mapped
	CompressionAlgorithm   string        // 11
	EstimatedCowSize       uint64        // 12
	EnableThreading        bool          // 13
	BatchedWrites          bool          // 14
	EstimatedOpsBufferSize uint64        // 15
	CompressionFactor      uint64        // 16
	ReadAheadSize          uint32        // 17 KiB
	// 18 is reserved (briefly o_direct).
	VerifyBlockSize  uint64 // 19
	NumVerifyThreads uint32 // 20
}

// UpdateStatus is the content of D/state (SnapshotUpdateStatus, §1.3).
type UpdateStatus struct {
	State                  UpdateState      // 1
	SectorsAllocated       uint64           // 2
	TotalSectors           uint64           // 3
	MetadataSectors        uint64           // 4
	UsingSnapuserd         bool             // 5
	MergePhase             MergePhase       // 6
	MergeFailureCode       MergeFailureCode // 7
	SourceBuildFingerprint string           // 8
	UserspaceSnapshots     bool             // 9
	IOUringEnabled         bool             // 10
	LegacySnapuserd        bool             // 11
	ODirect                bool             // 12
	CowOpMergeSize         uint32           // 13
	NumWorkerThreads       uint32           // 14
}

// ErrFormat marks a malformed message.
var ErrFormat = errors.New("state: malformed protobuf")

type enc struct{ b []byte }

func (e *enc) u64(num protowire.Number, v uint64) {
	if v != 0 {
		e.b = protowire.AppendTag(e.b, num, protowire.VarintType)
		e.b = protowire.AppendVarint(e.b, v)
	}
}

func (e *enc) i32(num protowire.Number, v int32) { e.u64(num, uint64(int64(v))) } // enums: sign-extended

func (e *enc) boolean(num protowire.Number, v bool) {
	if v {
		e.u64(num, 1)
	}
}

func (e *enc) str(num protowire.Number, v string) {
	if v != "" {
		e.b = protowire.AppendTag(e.b, num, protowire.BytesType)
		e.b = protowire.AppendString(e.b, v)
	}
}

// Marshal encodes s as libsnapshot does (ascending fields, defaults omitted).
func (s *SnapshotStatus) Marshal() []byte {
	var e enc
	e.str(1, s.Name)
	e.i32(2, int32(s.State))
	e.u64(3, s.DeviceSize)
	e.u64(4, s.SnapshotSize)
	e.u64(5, s.CowPartitionSize)
	e.u64(6, s.CowFileSize)
	e.u64(7, s.SectorsAllocated)
	e.u64(8, s.MetadataSectors)
	e.boolean(9, s.UsingSnapuserd)
	e.u64(10, s.OldPartitionSize)
	e.str(11, s.CompressionAlgorithm)
	e.u64(12, s.EstimatedCowSize)
	e.boolean(13, s.EnableThreading)
	e.boolean(14, s.BatchedWrites)
	e.u64(15, s.EstimatedOpsBufferSize)
	e.u64(16, s.CompressionFactor)
	e.u64(17, uint64(s.ReadAheadSize))
	e.u64(19, s.VerifyBlockSize)
	e.u64(20, uint64(s.NumVerifyThreads))
	return e.b
}

// Marshal encodes s as libsnapshot does; a None state with nothing else set
// is 0 bytes.
func (s *UpdateStatus) Marshal() []byte {
	var e enc
	e.i32(1, int32(s.State))
	e.u64(2, s.SectorsAllocated)
	e.u64(3, s.TotalSectors)
	e.u64(4, s.MetadataSectors)
	e.boolean(5, s.UsingSnapuserd)
	e.i32(6, int32(s.MergePhase))
	e.i32(7, int32(s.MergeFailureCode))
	e.str(8, s.SourceBuildFingerprint)
	e.boolean(9, s.UserspaceSnapshots)
	e.boolean(10, s.IOUringEnabled)
	e.boolean(11, s.LegacySnapuserd)
	e.boolean(12, s.ODirect)
	e.u64(13, uint64(s.CowOpMergeSize))
	e.u64(14, uint64(s.NumWorkerThreads))
	return e.b
}

// field is one decoded scalar or string field.
type field struct {
	num protowire.Number
	v   uint64
	s   string
	isS bool
}

// decode walks a message, calling f for every varint or length-delimited
// field; other wire types (and fields f does not know) are skipped. Errors
// name the byte offset.
func decode(b []byte, f func(field) error) error {
	off := 0
	for off < len(b) {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return fmt.Errorf("%w: bad tag at byte %d: %v", ErrFormat, off, protowire.ParseError(n))
		}
		if num > protowire.MaxValidNumber {
			return fmt.Errorf("%w: field number %d at byte %d", ErrFormat, num, off)
		}
		start := off
		off += n
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b[off:])
			if n < 0 {
				return fmt.Errorf("%w: bad varint of field %d at byte %d", ErrFormat, num, off)
			}
			off += n
			if err := f(field{num: num, v: v}); err != nil {
				return fmt.Errorf("field %d at byte %d: %w", num, start, err)
			}
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b[off:])
			if n < 0 {
				return fmt.Errorf("%w: bad length of field %d at byte %d", ErrFormat, num, off)
			}
			off += n
			if err := f(field{num: num, s: string(v), isS: true}); err != nil {
				return fmt.Errorf("field %d at byte %d: %w", num, start, err)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b[off:])
			if n < 0 {
				return fmt.Errorf("%w: bad field %d (wire type %d) at byte %d", ErrFormat, num, typ, start)
			}
			off += n
		}
	}
	return nil
}

// strField checks proto3's UTF-8 rule for string fields.
func strField(fl field) (string, bool, error) {
	if !fl.isS {
		return "", false, nil // wrong wire type: treated as unknown, as protobuf-go does
	}
	if !utf8.ValidString(fl.s) {
		return "", false, fmt.Errorf("%w: string is not valid UTF-8", ErrFormat)
	}
	return fl.s, true, nil
}

// UnmarshalSnapshotStatus decodes a D/snapshots/<P> file.
func UnmarshalSnapshotStatus(b []byte) (SnapshotStatus, error) {
	var s SnapshotStatus
	err := decode(b, func(fl field) error {
		switch fl.num {
		case 1, 11:
			v, ok, err := strField(fl)
			if err != nil || !ok {
				return err
			}
			if fl.num == 1 {
				s.Name = v
			} else {
				s.CompressionAlgorithm = v
			}
			return nil
		}
		if fl.isS {
			return nil // unknown or mismatched: skipped
		}
		switch fl.num {
		case 2:
			s.State = SnapshotState(int32(fl.v))
		case 3:
			s.DeviceSize = fl.v
		case 4:
			s.SnapshotSize = fl.v
		case 5:
			s.CowPartitionSize = fl.v
		case 6:
			s.CowFileSize = fl.v
		case 7:
			s.SectorsAllocated = fl.v
		case 8:
			s.MetadataSectors = fl.v
		case 9:
			s.UsingSnapuserd = fl.v != 0
		case 10:
			s.OldPartitionSize = fl.v
		case 12:
			s.EstimatedCowSize = fl.v
		case 13:
			s.EnableThreading = fl.v != 0
		case 14:
			s.BatchedWrites = fl.v != 0
		case 15:
			s.EstimatedOpsBufferSize = fl.v
		case 16:
			s.CompressionFactor = fl.v
		case 17:
			s.ReadAheadSize = uint32(fl.v)
		case 19:
			s.VerifyBlockSize = fl.v
		case 20:
			s.NumVerifyThreads = uint32(fl.v)
		}
		return nil
	})
	return s, err
}

// UnmarshalUpdateStatus decodes D/state. An empty input is None. Input that
// is not a valid message is read as the legacy text format (§1.7): one of
// the tokens none, initiated, …; unknown text is None.
func UnmarshalUpdateStatus(b []byte) (UpdateStatus, error) {
	s, err := unmarshalUpdateStatus(b)
	if err == nil {
		return s, nil
	}
	txt := string(b)
	for i, t := range legacyTokens {
		if txt == t {
			return UpdateStatus{State: UpdateState(i)}, nil
		}
	}
	return UpdateStatus{}, nil
}

func unmarshalUpdateStatus(b []byte) (UpdateStatus, error) {
	var s UpdateStatus
	err := decode(b, func(fl field) error {
		if fl.num == 8 {
			v, ok, err := strField(fl)
			if ok {
				s.SourceBuildFingerprint = v
			}
			return err
		}
		if fl.isS {
			return nil
		}
		switch fl.num {
		case 1:
			s.State = UpdateState(int32(fl.v))
		case 2:
			s.SectorsAllocated = fl.v
		case 3:
			s.TotalSectors = fl.v
		case 4:
			s.MetadataSectors = fl.v
		case 5:
			s.UsingSnapuserd = fl.v != 0
		case 6:
			s.MergePhase = MergePhase(int32(fl.v))
		case 7:
			s.MergeFailureCode = MergeFailureCode(int32(fl.v))
		case 9:
			s.UserspaceSnapshots = fl.v != 0
		case 10:
			s.IOUringEnabled = fl.v != 0
		case 11:
			s.LegacySnapuserd = fl.v != 0
		case 12:
			s.ODirect = fl.v != 0
		case 13:
			s.CowOpMergeSize = uint32(fl.v)
		case 14:
			s.NumWorkerThreads = uint32(fl.v)
		}
		return nil
	})
	return s, err
}
