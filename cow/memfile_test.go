package cow

import (
	"bytes"
	"errors"
	"io"
	"sync"
)

// memFile is an in-memory File that remembers what was durable at the last
// Sync, so tests can simulate power loss (after pebble's crashable MemFS).
type memFile struct {
	mu     sync.Mutex
	b      []byte
	synced []byte // contents at the last Sync
	syncs  int
	// failWriteAt, if > 0, makes the failWriteAt-th WriteAt fail.
	failWriteAt int
	writes      int
}

var errInjected = errors.New("injected write failure")

func newMemFile(b []byte) *memFile { return &memFile{b: bytes.Clone(b), synced: bytes.Clone(b)} }

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes++
	if m.failWriteAt > 0 && m.writes == m.failWriteAt {
		return 0, errInjected
	}
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	copy(m.b[off:], p)
	return len(p), nil
}

func (m *memFile) Sync() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.syncs++
	m.synced = bytes.Clone(m.b)
	return nil
}

func (m *memFile) Truncate(n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n <= int64(len(m.b)) {
		m.b = m.b[:n]
	} else {
		m.b = append(m.b, make([]byte, n-int64(len(m.b)))...)
	}
	return nil
}

func (m *memFile) Size() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.b))
}

func (m *memFile) Bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.b)
}

// crashClone returns the file as power loss would leave it: only what was
// synced.
func (m *memFile) crashClone() *memFile {
	m.mu.Lock()
	defer m.mu.Unlock()
	return newMemFile(m.synced)
}

// clone returns a copy of the current contents (a crash that kept every
// write, the worst case for stale data).
func (m *memFile) clone() *memFile { return newMemFile(m.Bytes()) }

// reader parses the current contents.
func (m *memFile) reader(opts *ReaderOptions) (*Reader, error) {
	b := m.Bytes()
	return NewReader(bytes.NewReader(b), int64(len(b)), opts)
}
