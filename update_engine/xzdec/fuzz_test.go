package xzdec

import (
	"bytes"
	"errors"
	"io"
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
		// Read and WriteTo must agree on the bytes and on the error.
		var viaRead bytes.Buffer
		buf := make([]byte, 4096)
		var rerr error
		for {
			n, err := r.Read(buf)
			viaRead.Write(buf[:n])
			if viaRead.Len() > 64<<20 {
				return
			}
			if err != nil {
				rerr = err
				break
			}
		}
		r2, _ := NewReader(b)
		var viaWriteTo bytes.Buffer
		_, werr := r2.WriteTo(&viaWriteTo)
		if rerr == io.EOF {
			rerr = nil
		}
		if !bytes.Equal(viaRead.Bytes(), viaWriteTo.Bytes()) || (rerr == nil) != (werr == nil) {
			t.Fatalf("Read gave %d bytes (err %v), WriteTo %d bytes (err %v)", viaRead.Len(), rerr, viaWriteTo.Len(), werr)
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
