package xzdec

import (
	"errors"
	"testing"
)

func FuzzDecode(f *testing.F) {
	f.Add([]byte{0xFD, '7', 'z', 'X', 'Z', 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewReader(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("unmarked error %v", err)
			}
			return
		}
		buf := make([]byte, 4096)
		total := 0
		for {
			n, err := r.Read(buf)
			total += n
			if total > 64<<20 {
				return
			}
			if err != nil {
				break
			}
		}
	})
}
