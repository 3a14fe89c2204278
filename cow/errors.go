package cow

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every *FormatError unwraps to ErrCorrupt.
var (
	ErrCorrupt = errors.New("cow: corrupt image")
	// ErrNoFooter: a v2 file without a footer parsed without a label (torn file).
	ErrNoFooter = errors.New("cow: no COW footer found")
	// ErrLabelNotFound: parsing "up to label L" did not find L.
	ErrLabelNotFound = errors.New("cow: label not found")
	// ErrUnsupported: a valid image using something this package does not handle.
	ErrUnsupported = errors.New("cow: unsupported")
)

// FormatError describes corrupt or invalid input, naming where it was found.
// Off is an absolute byte offset in the COW (-1 if unknown); Op is the op
// index (-1 if not about an op).
type FormatError struct {
	Path string
	Off  int64
	Op   int64
	Msg  string
	Val  any
}

func (e *FormatError) Error() string {
	s := "cow: "
	if e.Path != "" {
		s += e.Path + ": "
	}
	switch {
	case e.Op >= 0 && e.Off >= 0:
		s += fmt.Sprintf("op %d at offset %#x: ", e.Op, e.Off)
	case e.Op >= 0:
		s += fmt.Sprintf("op %d: ", e.Op)
	case e.Off >= 0:
		s += fmt.Sprintf("at offset %#x: ", e.Off)
	}
	s += e.Msg
	if e.Val != nil {
		s += fmt.Sprintf(" %v", e.Val)
	}
	return s
}

func (e *FormatError) Unwrap() error { return ErrCorrupt }

// formatErr builds a FormatError not tied to an op.
func formatErr(off int64, msg string, val any) *FormatError {
	return &FormatError{Off: off, Op: -1, Msg: msg, Val: val}
}

// opErr builds a FormatError about op index op at offset off.
func opErr(op int64, off int64, msg string, val any) *FormatError {
	return &FormatError{Off: off, Op: op, Msg: msg, Val: val}
}
