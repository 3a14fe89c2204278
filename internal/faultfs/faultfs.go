// Package faultfs is vabc's small file layer: a File interface that every
// crash-sensitive component (the merge engine, COW writers) does its I/O
// through, an os-backed implementation, a fault-injecting wrapper in the style
// of pebble's vfs/errorfs, and a crash-simulating in-memory file in the style
// of pebble's CrashableMem/CrashClone.
//
// Fault injection: Wrap(f, path, inj) turns every call into an Op{Kind, Path,
// Offset, Len}; the Injector decides whether the call fails. Building blocks:
// OnIndex(n) fails the n-th call, Counter counts injected failures, Toggle
// arms an injector after setup, Random fails calls with a seeded probability,
// and Kinds restricts an injector to some op kinds. A test loops the index
// from 0 upward until a run succeeds, so every failure point is covered
// without anyone listing them.
//
// Power loss: a MemFile keeps its durable (synced) image apart from the writes
// issued since the last Sync. CrashClone returns the file as it could look
// after a power cut: the durable image plus a seeded random share of the
// unsynced writes (whole writes, applied in issue order).
//
// The package is a leaf: it imports only the standard library.
package faultfs

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// File is the I/O surface the merge engine and the COW writers need. All
// methods must be safe to call from several goroutines at once (ReadAt and
// WriteAt on disjoint ranges, as with os.File).
type File interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes all completed writes durable (fsync).
	Sync() error
	// Truncate changes the file size.
	Truncate(size int64) error
	// Size returns the current file size (fstat).
	Size() (int64, error)
	// Name is the path the file was opened with (used in errors and Ops).
	Name() string
	Close() error
}

// OSFile is a File backed by *os.File.
type OSFile struct{ f *os.File }

// OpenFile opens path with os.OpenFile and returns it as a File.
func OpenFile(path string, flag int, perm os.FileMode) (*OSFile, error) {
	f, err := os.OpenFile(path, flag, perm)
	if err != nil {
		return nil, err
	}
	return &OSFile{f}, nil
}

// Open opens path read-write.
func Open(path string) (*OSFile, error) { return OpenFile(path, os.O_RDWR, 0) }

// FromOS wraps an already open *os.File; closing the File closes f.
func FromOS(f *os.File) *OSFile { return &OSFile{f} }

func (o *OSFile) ReadAt(p []byte, off int64) (int, error)  { return o.f.ReadAt(p, off) }
func (o *OSFile) WriteAt(p []byte, off int64) (int, error) { return o.f.WriteAt(p, off) }
func (o *OSFile) Sync() error                              { return o.f.Sync() }
func (o *OSFile) Truncate(size int64) error                { return o.f.Truncate(size) }
func (o *OSFile) Name() string                             { return o.f.Name() }
func (o *OSFile) Close() error                             { return o.f.Close() }

// OS returns the underlying *os.File (for Fd-based I/O such as io_uring).
func (o *OSFile) OS() *os.File { return o.f }

// Size returns the file size; for block devices, where Stat reports 0, it
// seeks to the end instead.
func (o *OSFile) Size() (int64, error) {
	st, err := o.f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Mode().IsRegular() {
		return st.Size(), nil
	}
	n, err := o.f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("faultfs: size of %s: %w", o.f.Name(), err)
	}
	return n, nil
}

// ReadFull reads exactly len(p) bytes at off; a short read is an error that
// names the file and offset (io.ErrUnexpectedEOF underneath).
func ReadFull(f File, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %s: %d of %d bytes at offset %#x: %w", f.Name(), n, len(p), off, err)
}

// WriteFull writes p at off, naming the file and offset on failure.
func WriteFull(f File, p []byte, off int64) error {
	n, err := f.WriteAt(p, off)
	if err == nil && n != len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("write %s: %d bytes at offset %#x: %w", f.Name(), len(p), off, err)
	}
	return nil
}
