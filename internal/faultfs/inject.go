package faultfs

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
)

// OpKind names a File method.
type OpKind uint8

const (
	OpRead OpKind = iota
	OpWrite
	OpSync
	OpTruncate
	OpSize
	OpClose
)

var opKindNames = [...]string{"read", "write", "sync", "truncate", "size", "close"}

func (k OpKind) String() string {
	if int(k) < len(opKindNames) {
		return opKindNames[k]
	}
	return fmt.Sprintf("opkind(%d)", k)
}

// IsRead reports whether k only observes the file (read, size).
func (k OpKind) IsRead() bool { return k == OpRead || k == OpSize }

// IsWrite reports whether k changes the file or its durability (write,
// sync, truncate).
func (k OpKind) IsWrite() bool { return k == OpWrite || k == OpSync || k == OpTruncate }

// Op is one File call as the injector sees it.
type Op struct {
	Kind   OpKind
	Path   string
	Offset int64 // read/write offset, truncate size; 0 otherwise
	Len    int   // read/write length
	Index  int64 // position of the call among all calls seen by the injector chain's Wrap group
}

func (o Op) String() string {
	return fmt.Sprintf("#%d %s %s off=%#x len=%d", o.Index, o.Kind, o.Path, o.Offset, o.Len)
}

// ErrInjected is what every injected failure wraps.
var ErrInjected = errors.New("faultfs: injected error")

// InjectedError names the call that was failed.
type InjectedError struct{ Op Op }

func (e *InjectedError) Error() string { return "faultfs: injected error at " + e.Op.String() }
func (e *InjectedError) Unwrap() error { return ErrInjected }

// Injector decides whether an op fails. It returns nil to let the call go
// through.
type Injector interface {
	MaybeError(op Op) error
}

// InjectorFunc adapts a function to Injector.
type InjectorFunc func(Op) error

func (f InjectorFunc) MaybeError(op Op) error { return f(op) }

// indexInjector fails exactly the n-th op it sees (0-based) and no other.
type indexInjector struct {
	n    int64
	seen atomic.Int64
}

// OnIndex returns an injector that fails the n-th call it is asked about
// (counting from 0, across every file wrapped with it) and only that one.
func OnIndex(n int64) Injector { return &indexInjector{n: n} }

func (i *indexInjector) MaybeError(op Op) error {
	if i.seen.Add(1)-1 == i.n {
		return &InjectedError{op}
	}
	return nil
}

// FromIndex returns an injector that fails the n-th call and every call after
// it: the process "dies" at call n and nothing more reaches the files.
func FromIndex(n int64) Injector {
	var seen atomic.Int64
	return InjectorFunc(func(op Op) error {
		if seen.Add(1)-1 >= n {
			return &InjectedError{op}
		}
		return nil
	})
}

// Counter wraps an injector and counts the calls it saw and the failures it
// injected.
type Counter struct {
	Inner    Injector
	calls    atomic.Int64
	injected atomic.Int64
}

func (c *Counter) MaybeError(op Op) error {
	c.calls.Add(1)
	if c.Inner == nil {
		return nil
	}
	err := c.Inner.MaybeError(op)
	if err != nil {
		c.injected.Add(1)
	}
	return err
}

// Calls is how many ops were seen.
func (c *Counter) Calls() int64 { return c.calls.Load() }

// Injected is how many ops were failed.
func (c *Counter) Injected() int64 { return c.injected.Load() }

// Toggle passes ops to Inner only while on. It starts off, so setup I/O is
// never failed.
type Toggle struct {
	Inner Injector
	on    atomic.Bool
}

func (t *Toggle) On()  { t.on.Store(true) }
func (t *Toggle) Off() { t.on.Store(false) }

func (t *Toggle) MaybeError(op Op) error {
	if !t.on.Load() {
		return nil
	}
	return t.Inner.MaybeError(op)
}

// Random fails each op with probability p, from a seeded generator (the same
// seed and the same op sequence give the same failures).
func Random(seed uint64, p float64) Injector {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return InjectorFunc(func(op Op) error {
		mu.Lock()
		fail := rng.Float64() < p
		mu.Unlock()
		if fail {
			return &InjectedError{op}
		}
		return nil
	})
}

// Kinds limits inner to ops of the given kinds; other ops pass untouched and
// are not shown to inner (so OnIndex counts only these kinds).
func Kinds(inner Injector, kinds ...OpKind) Injector {
	var set [8]bool
	for _, k := range kinds {
		set[k&7] = true
	}
	return InjectorFunc(func(op Op) error {
		if !set[op.Kind&7] {
			return nil
		}
		return inner.MaybeError(op)
	})
}

// Writes limits inner to ops that change files (write, sync, truncate).
func Writes(inner Injector) Injector { return Kinds(inner, OpWrite, OpSync, OpTruncate) }

// Group numbers the calls of every file wrapped through it, so that Op.Index
// is global across files (a crash happens to the whole machine).
type Group struct {
	Inj   Injector
	index atomic.Int64
	// Log, if set, receives every op before the injector sees it.
	Log func(Op)
}

// Wrap returns f with every call passed through g's injector first.
func (g *Group) Wrap(f File) File { return &faultFile{f: f, g: g} }

// Wrap returns f with every call passed through inj first.
func Wrap(f File, inj Injector) File { return (&Group{Inj: inj}).Wrap(f) }

type faultFile struct {
	f File
	g *Group
}

func (w *faultFile) check(kind OpKind, off int64, n int) error {
	op := Op{Kind: kind, Path: w.f.Name(), Offset: off, Len: n, Index: w.g.index.Add(1) - 1}
	if w.g.Log != nil {
		w.g.Log(op)
	}
	if w.g.Inj == nil {
		return nil
	}
	return w.g.Inj.MaybeError(op)
}

func (w *faultFile) ReadAt(p []byte, off int64) (int, error) {
	if err := w.check(OpRead, off, len(p)); err != nil {
		return 0, err
	}
	return w.f.ReadAt(p, off)
}

func (w *faultFile) WriteAt(p []byte, off int64) (int, error) {
	if err := w.check(OpWrite, off, len(p)); err != nil {
		return 0, err
	}
	return w.f.WriteAt(p, off)
}

func (w *faultFile) Sync() error {
	if err := w.check(OpSync, 0, 0); err != nil {
		return err
	}
	return w.f.Sync()
}

func (w *faultFile) Truncate(size int64) error {
	if err := w.check(OpTruncate, size, 0); err != nil {
		return err
	}
	return w.f.Truncate(size)
}

func (w *faultFile) Size() (int64, error) {
	if err := w.check(OpSize, 0, 0); err != nil {
		return 0, err
	}
	return w.f.Size()
}

func (w *faultFile) Name() string { return w.f.Name() }

func (w *faultFile) Close() error {
	if err := w.check(OpClose, 0, 0); err != nil {
		// The underlying file is still closed so tests do not leak fds.
		w.f.Close()
		return err
	}
	return w.f.Close()
}
