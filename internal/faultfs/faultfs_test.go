package faultfs

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func TestOSFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	f, err := OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := WriteFull(f, []byte("hello world"), 4); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if n, err := f.Size(); err != nil || n != 15 {
		t.Fatalf("Size = %d, %v; want 15", n, err)
	}
	got := make([]byte, 5)
	if err := ReadFull(f, got, 10); err != nil || string(got) != "world" {
		t.Fatalf("ReadFull = %q, %v", got, err)
	}
	if err := ReadFull(f, got, 12); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short read err = %v, want ErrUnexpectedEOF", err)
	}
	if err := f.Truncate(3); err != nil {
		t.Fatal(err)
	}
	if n, _ := f.Size(); n != 3 {
		t.Fatalf("after truncate size %d", n)
	}
}

func TestInjectors(t *testing.T) {
	tests := []struct {
		name string
		inj  func() Injector
		ops  []OpKind
		fail []bool
	}{
		{"OnIndex(2)", func() Injector { return OnIndex(2) },
			[]OpKind{OpWrite, OpRead, OpSync, OpWrite}, []bool{false, false, true, false}},
		{"FromIndex(1)", func() Injector { return FromIndex(1) },
			[]OpKind{OpWrite, OpRead, OpSync}, []bool{false, true, true}},
		{"Writes(OnIndex(1))", func() Injector { return Writes(OnIndex(1)) },
			[]OpKind{OpRead, OpWrite, OpRead, OpSync, OpWrite}, []bool{false, false, false, true, false}},
		{"Kinds(sync)", func() Injector { return Kinds(OnIndex(0), OpSync) },
			[]OpKind{OpWrite, OpSync, OpSync}, []bool{false, true, false}},
		{"Toggle off", func() Injector { return &Toggle{Inner: OnIndex(0)} },
			[]OpKind{OpWrite, OpWrite}, []bool{false, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := Wrap(NewMemFile("m", make([]byte, 16)), tc.inj())
			for i, k := range tc.ops {
				var err error
				buf := make([]byte, 1)
				switch k {
				case OpWrite:
					_, err = f.WriteAt(buf, 1)
				case OpRead:
					_, err = f.ReadAt(buf, 1)
				case OpSync:
					err = f.Sync()
				}
				if got := err != nil; got != tc.fail[i] {
					t.Fatalf("op %d (%s): err = %v, want failure %v", i, k, err, tc.fail[i])
				}
				if err != nil && !errors.Is(err, ErrInjected) {
					t.Fatalf("op %d: error %v does not wrap ErrInjected", i, err)
				}
			}
		})
	}
}

func TestToggleCounterGroup(t *testing.T) {
	tog := &Toggle{Inner: OnIndex(1)}
	c := &Counter{Inner: tog}
	var seen []Op
	g := &Group{Inj: c, Log: func(op Op) { seen = append(seen, op) }}
	a, b := g.Wrap(NewMemFile("a", nil)), g.Wrap(NewMemFile("b", nil))
	a.WriteAt([]byte{1}, 0)
	tog.On()
	if _, err := b.WriteAt([]byte{1}, 7); err != nil {
		t.Fatalf("op index 0 after toggle failed: %v", err)
	}
	err := a.Sync()
	var ie *InjectedError
	if !errors.As(err, &ie) || ie.Op.Path != "a" || ie.Op.Kind != OpSync || ie.Op.Index != 2 {
		t.Fatalf("err = %v (%+v)", err, ie)
	}
	if c.Calls() != 3 || c.Injected() != 1 {
		t.Fatalf("counter calls=%d injected=%d", c.Calls(), c.Injected())
	}
	if len(seen) != 3 || seen[1].Path != "b" || seen[1].Offset != 7 || seen[1].Len != 1 {
		t.Fatalf("log = %v", seen)
	}
}

func TestRandomDeterministic(t *testing.T) {
	run := func() []bool {
		inj := Random(42, 0.3)
		var out []bool
		for i := 0; i < 200; i++ {
			out = append(out, inj.MaybeError(Op{}) != nil)
		}
		return out
	}
	a, b := run(), run()
	n := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("same seed gave different failures")
		}
		if a[i] {
			n++
		}
	}
	if n < 30 || n > 90 {
		t.Fatalf("%d of 200 failed at p=0.3", n)
	}
}

func TestMemFileCrashClone(t *testing.T) {
	m := NewMemFile("m", []byte("aaaaaaaa"))
	m.WriteAt([]byte("bb"), 0)
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	m.WriteAt([]byte("cc"), 2)
	m.WriteAt([]byte("dd"), 10) // extends with a zero gap
	if got := m.Bytes(); !bytes.Equal(got, []byte("bbccaaaa\x00\x00dd")) {
		t.Fatalf("current = %q", got)
	}
	if m.Unsynced() != 2 {
		t.Fatalf("unsynced = %d", m.Unsynced())
	}
	none := m.CrashClone(CrashCloneConfig{})
	if got := none.Bytes(); string(got) != "bbaaaaaa" {
		t.Fatalf("crash clone without unsynced = %q", got)
	}
	all := m.CrashClone(CrashCloneConfig{UnsyncedDataPercent: 100, RNG: rand.New(rand.NewPCG(1, 2))})
	if !bytes.Equal(all.Bytes(), m.Bytes()) {
		t.Fatalf("crash clone keeping all = %q", all.Bytes())
	}
	// A 50% clone over many seeds sees both outcomes of each write.
	kinds := map[string]bool{}
	for s := uint64(0); s < 64; s++ {
		c := m.CrashClone(CrashCloneConfig{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(s, 0))})
		kinds[string(c.Bytes())] = true
	}
	if len(kinds) != 4 {
		t.Fatalf("50%% clones produced %d distinct images, want 4", len(kinds))
	}
	// Truncate is tracked as an unsynced op too.
	m.Sync()
	m.Truncate(4)
	if c := m.CrashClone(CrashCloneConfig{}); len(c.Bytes()) != 12 {
		t.Fatalf("unsynced truncate survived: %q", c.Bytes())
	}
	m.Close()
	if _, err := m.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	if c := m.CrashClone(CrashCloneConfig{}); len(c.Bytes()) != 12 {
		t.Fatal("crash clone of a closed file lost data")
	}
}

func TestCrashCloneTornWrites(t *testing.T) {
	m := NewMemFile("m", make([]byte, 16))
	m.WriteAt([]byte("abcdefghij"), 3) // pages of 4: [3,4) [4,8) [8,12) [12,13)
	images := map[string]bool{}
	for s := uint64(0); s < 200; s++ {
		c := m.CrashClone(CrashCloneConfig{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(s, 9)), PageSize: 4})
		b := c.Bytes()
		for _, page := range [][2]int{{3, 4}, {4, 8}, {8, 12}, {12, 13}} {
			got := b[page[0]:page[1]]
			if !bytes.Equal(got, make([]byte, len(got))) && !bytes.Equal(got, []byte("abcdefghij")[page[0]-3:page[1]-3]) {
				t.Fatalf("page %v torn inside: %q", page, got)
			}
		}
		images[string(b)] = true
	}
	if len(images) != 16 {
		t.Fatalf("%d distinct torn images, want 16", len(images))
	}
}

func TestCrashCloneKeep(t *testing.T) {
	for _, tc := range []struct {
		name string
		keep func(i, n int) bool
		want string
	}{
		{"none", KeepNone, "...."},
		{"all", KeepAll, "abcd"},
		{"last", KeepLast, "...d"},
		{"all but first", KeepAllButFirst, ".bcd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMemFile("f", []byte("...."))
			for i, c := range "abcd" {
				m.WriteAt([]byte{byte(c)}, int64(i))
			}
			if got := string(m.CrashClone(CrashCloneConfig{Keep: tc.keep}).Bytes()); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			// Torn into pages: a 4-byte write over pages of 2 is two pieces.
			m = NewMemFile("f", []byte("...."))
			m.WriteAt([]byte("abcd"), 0)
			got := string(m.CrashClone(CrashCloneConfig{Keep: tc.keep, PageSize: 2}).Bytes())
			want := map[string]string{"none": "....", "all": "abcd", "last": "..cd", "all but first": "..cd"}[tc.name]
			if got != want {
				t.Errorf("pages: got %q, want %q", got, want)
			}
		})
	}
}
