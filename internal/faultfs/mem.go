package faultfs

import (
	"errors"
	"io"
	"math/rand/v2"
	"sync"
)

// MemFile is an in-memory File that remembers which writes are durable.
// Reads see every completed write; Sync makes them durable; CrashClone
// returns what could survive a power cut.
type MemFile struct {
	name string

	mu      sync.Mutex
	cur     []byte  // what reads see
	durable []byte  // what survives a crash for sure
	pending []memOp // writes/truncates since the last Sync, in issue order
	closed  bool
}

type memOp struct {
	truncate bool
	off      int64 // write offset or truncate size
	data     []byte
}

// ErrClosed is returned by calls on a closed MemFile.
var ErrClosed = errors.New("faultfs: file already closed")

// NewMemFile returns a MemFile whose initial (durable) content is a copy of
// data.
func NewMemFile(name string, data []byte) *MemFile {
	return &MemFile{name: name, cur: append([]byte(nil), data...), durable: append([]byte(nil), data...)}
}

func (m *MemFile) Name() string { return m.name }

func (m *MemFile) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, ErrClosed
	}
	if off < 0 {
		return 0, errors.New("faultfs: negative offset")
	}
	if off >= int64(len(m.cur)) {
		return 0, io.EOF
	}
	n := copy(p, m.cur[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func applyWrite(buf []byte, p []byte, off int64) []byte {
	if end := off + int64(len(p)); end > int64(len(buf)) {
		if end <= int64(cap(buf)) {
			buf = buf[:end]
		} else {
			nb := make([]byte, end, end+end/4)
			copy(nb, buf)
			buf = nb
		}
	}
	copy(buf[off:], p)
	return buf
}

func applyTruncate(buf []byte, size int64) []byte {
	if size <= int64(len(buf)) {
		return buf[:size]
	}
	return applyWrite(buf, make([]byte, size-int64(len(buf))), int64(len(buf)))
}

func (m *MemFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, ErrClosed
	}
	if off < 0 {
		return 0, errors.New("faultfs: negative offset")
	}
	// A write past the end zero-fills the gap, as on a regular file.
	m.cur = applyWrite(m.cur, p, off)
	m.pending = append(m.pending, memOp{off: off, data: append([]byte(nil), p...)})
	return len(p), nil
}

func (m *MemFile) Truncate(size int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if size < 0 {
		return errors.New("faultfs: negative size")
	}
	m.cur = applyTruncate(m.cur, size)
	m.pending = append(m.pending, memOp{truncate: true, off: size})
	return nil
}

func (m *MemFile) Sync() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	for _, op := range m.pending {
		if op.truncate {
			m.durable = applyTruncate(m.durable, op.off)
		} else {
			m.durable = applyWrite(m.durable, op.data, op.off)
		}
	}
	m.pending = m.pending[:0]
	return nil
}

func (m *MemFile) Size() (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, ErrClosed
	}
	return int64(len(m.cur)), nil
}

func (m *MemFile) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.closed = true
	return nil
}

// Unsynced is the number of writes and truncates not yet made durable.
func (m *MemFile) Unsynced() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pending)
}

// Bytes returns a copy of the current content (what reads see).
func (m *MemFile) Bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.cur...)
}

// CrashCloneConfig says which unsynced writes survive a simulated power cut.
type CrashCloneConfig struct {
	// UnsyncedDataPercent is the chance (0–100) that each unsynced write or
	// truncate survives. 0 keeps only durable data.
	UnsyncedDataPercent int
	// RNG picks the survivors; nil means keep none of them.
	RNG *rand.Rand
	// PageSize, if > 0, tears unsynced writes: each write is split at
	// PageSize boundaries of the file and every piece survives on its own,
	// as a disk cache writes back pages independently.
	PageSize int
	// Keep, if set, decides deterministically instead: the i-th of the n
	// unsynced writes and truncates (issue order; pieces when PageSize is
	// set) survives iff Keep(i, n). Adversarial sets: KeepNone, KeepLast,
	// KeepAllButFirst, KeepAll.
	Keep func(i, n int) bool
}

// Deterministic survivor sets for CrashCloneConfig.Keep.
var (
	KeepNone        = func(i, n int) bool { return false }
	KeepAll         = func(i, n int) bool { return true }
	KeepLast        = func(i, n int) bool { return i == n-1 }
	KeepAllButFirst = func(i, n int) bool { return i > 0 }
)

// CrashClone returns a new MemFile (open, everything durable) holding the
// durable content plus the surviving unsynced writes, applied in issue order.
// The receiver is left unchanged and may even be closed.
func (m *MemFile) CrashClone(cfg CrashCloneConfig) *MemFile {
	m.mu.Lock()
	defer m.mu.Unlock()
	buf := append([]byte(nil), m.durable...)
	n := len(m.pending)
	if cfg.PageSize > 0 {
		n = 0
		ps := int64(cfg.PageSize)
		for _, op := range m.pending {
			if op.truncate {
				n++
				continue
			}
			n += int((op.off+int64(len(op.data))-1)/ps - op.off/ps + 1)
		}
	}
	seen := 0
	keep := func() bool {
		i := seen
		seen++
		if cfg.Keep != nil {
			return cfg.Keep(i, n)
		}
		return cfg.RNG != nil && cfg.UnsyncedDataPercent > 0 && cfg.RNG.IntN(100) < cfg.UnsyncedDataPercent
	}
	for _, op := range m.pending {
		switch {
		case op.truncate:
			if keep() {
				buf = applyTruncate(buf, op.off)
			}
		case cfg.PageSize > 0:
			ps := int64(cfg.PageSize)
			for off := op.off; off < op.off+int64(len(op.data)); {
				end := min((off/ps+1)*ps, op.off+int64(len(op.data)))
				if keep() {
					buf = applyWrite(buf, op.data[off-op.off:end-op.off], off)
				}
				off = end
			}
		default:
			if keep() {
				buf = applyWrite(buf, op.data, op.off)
			}
		}
	}
	return &MemFile{name: m.name, cur: buf, durable: append([]byte(nil), buf...)}
}
