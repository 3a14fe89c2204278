package legacy

import (
	"bytes"
	"errors"
	"testing"

	"github.com/vabc-go/vabc/cow"
)

// fuzzOrder is a merge order of 40 ordered ops (a shifted run: each reads
// the block the next one writes) and 600 Replace/Zero ops: three areas,
// several batches and read-ahead windows.
func fuzzOrder() []cow.Op {
	var order []cow.Op
	for b := uint64(1040); b > 1000; b-- {
		order = append(order, cow.Op{Type: cow.OpCopy, NewBlock: b, Source: b - 1})
	}
	for b := uint64(2600); b > 2000; b-- {
		t := cow.OpReplace
		if b%7 == 0 {
			t = cow.OpZero
		}
		order = append(order, cow.Op{Type: t, NewBlock: b})
	}
	return order
}

// FuzzInterpret feeds arbitrary metadata writes to a store at an arbitrary
// merge position. An accepted write must be a real merge step: it merges ≥ 1
// exception, ends at the store's unmerged end, and the area the store then
// serves is exactly the bytes written. A refused one is ErrBadMetadataWrite.
func FuzzInterpret(f *testing.F) {
	order := fuzzOrder()
	base, err := NewLayout(order, 0, 7)
	if err != nil {
		f.Fatal(err)
	}
	img := make([]byte, ChunkSize)
	for a := 0; a < base.Areas(); a++ {
		base.Area(a, img)
		f.Add(uint8(a), uint16(0), append([]byte(nil), img...))
		n := (len(base.exc) - a*ExceptionsPerArea) % ExceptionsPerArea
		if n > 0 && a == base.Areas()-1 {
			step := append([]byte(nil), img...)
			clear(step[16*(n-3):])
			f.Add(uint8(a), uint16(0), step)
			f.Add(uint8(a), uint16(0), step[:2048])
			step[5] ^= 1
			f.Add(uint8(a), uint16(0), step)
		}
	}
	f.Fuzz(func(t *testing.T, area uint8, merged uint16, data []byte) {
		l, err := NewLayout(order, 0, 7)
		if err != nil {
			t.Fatal(err)
		}
		l.merged = int(merged) % (len(l.exc) + 1)
		before := l.merged
		a := int(area)
		s, err := l.Interpret(a, data)
		if err != nil {
			if !errors.Is(err, ErrBadMetadataWrite) {
				t.Fatalf("error %v is not ErrBadMetadataWrite", err)
			}
			if l.merged != before {
				t.Fatal("a refused write changed the store")
			}
			return
		}
		if s.Exceptions < 1 || s.First+s.Exceptions != len(l.exc)-before || s.Area != a {
			t.Fatalf("accepted step %+v at %d unmerged", s, len(l.exc)-before)
		}
		if from, n := l.completedOps(s); n != s.Exceptions || from != len(order)-(len(l.exc)-before) {
			t.Fatalf("step %+v completes %d ops from %d", s, n, from)
		}
		l.Apply(s)
		got := make([]byte, ChunkSize)
		l.Area(a, got)
		if !bytes.Equal(got, data) {
			t.Fatal("the store's area after an accepted step differs from the bytes written")
		}
	})
}
