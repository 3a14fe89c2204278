package payload

import (
	"errors"
	"fmt"

	"github.com/vabc-go/vabc/update_engine/metadata"
)

var (
	// ErrCorrupt marks every error caused by malformed payload bytes.
	ErrCorrupt = errors.New("payload: corrupt")
	// ErrUnsupported marks valid input this package cannot handle.
	ErrUnsupported = errors.New("payload: unsupported")
)

// FormatError describes malformed payload bytes at a file offset.
type FormatError struct {
	Path string // file name, may be empty
	Off  int64  // byte offset of the bad record within payload.bin
	Msg  string
	Val  any // offending value, nil if none
}

func (e *FormatError) Error() string {
	s := "payload: "
	if e.Path != "" {
		s += e.Path + ": "
	}
	s += fmt.Sprintf("at offset %#x: %s", e.Off, e.Msg)
	if e.Val != nil {
		s += fmt.Sprintf(" %v", e.Val)
	}
	return s
}

func (e *FormatError) Unwrap() error { return ErrCorrupt }

// OpError names the partition, operation index and type an error belongs to.
type OpError struct {
	Partition string
	Index     int
	Type      metadata.InstallOperation_Type
	Err       error
}

func (e *OpError) Error() string {
	return fmt.Sprintf("partition %s op %d (%s): %v", e.Partition, e.Index, TypeName(e.Type), e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

// TypeName is the AOSP name of an operation type, or "type N" for numbers
// this package does not know.
func TypeName(t metadata.InstallOperation_Type) string {
	if _, ok := metadata.InstallOperation_Type_name[int32(t)]; ok {
		return t.String()
	}
	return fmt.Sprintf("type %d", int32(t))
}

// KnownType reports whether t is a number defined in update_metadata.proto.
func KnownType(t metadata.InstallOperation_Type) bool {
	_, ok := metadata.InstallOperation_Type_name[int32(t)]
	return ok
}
