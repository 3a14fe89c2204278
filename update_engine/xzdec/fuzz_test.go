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

// FuzzLZMA2 feeds raw LZMA2 data to the chunk decoder directly: the xz
// container's CRCs keep FuzzDecode from reaching it with corrupt chunks.
func FuzzLZMA2(f *testing.F) {
	f.Add([]byte{0x01, 0x00, 0x02, 'a', 'b', 'c', 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		d := newLZMA2(b, 1<<16)
		defer d.release()
		buf := make([]byte, 1<<16)
		total := 0
		for total < 64<<20 {
			n, err := d.Read(buf)
			total += n
			if err != nil {
				return
			}
		}
	})
}
