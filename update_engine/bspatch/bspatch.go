// Package bspatch applies bsdiff patches in the two formats update_engine
// uses (spec payload-format.md §3.4): BSDIFF40 (three bzip2 streams) and
// BSDF2 (per-stream compressor: 0 none, 1 bzip2, 2 brotli).
//
// Header (32 bytes):
//
//	[0,8)   "BSDIFF40", or "BSDF2" + control/diff/extra compressor bytes
//	[8,16)  compressed control stream length X
//	[16,24) compressed diff stream length Y
//	[24,32) new file size
//	[32,32+X) control, [32+X,32+X+Y) diff, [32+X+Y,end) extra
//
// Integers are bsdiff "offtin": little-endian 63-bit magnitude with the sign
// in the top bit. The control stream holds (diff_len, extra_len, old_seek)
// triples. AOSP rejects compressor 0 in BSDF2; this package accepts it (as
// vm03's payload_dumper does) since it is unambiguous.
package bspatch

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/andybalholm/brotli"
)

// HeaderSize is the fixed patch header length.
const HeaderSize = 32

// ErrCorrupt marks malformed patches.
var ErrCorrupt = errors.New("bspatch: corrupt patch")

// Compressor identifies how one of the three streams is compressed.
type Compressor uint8

const (
	None   Compressor = 0
	BZ2    Compressor = 1
	Brotli Compressor = 2
)

func (c Compressor) String() string {
	switch c {
	case None:
		return "none"
	case BZ2:
		return "bz2"
	case Brotli:
		return "brotli"
	}
	return fmt.Sprintf("compressor(%d)", uint8(c))
}

// Header is a decoded patch header.
type Header struct {
	Magic       string        // "BSDIFF40" or "BSDF2"
	Compressors [3]Compressor // control, diff, extra
	CtrlLen     int64
	DiffLen     int64
	NewSize     int64
}

// Offt decodes bsdiff's sign-magnitude little-endian int64 ("offt").
func Offt(b []byte) int64 {
	v := binary.LittleEndian.Uint64(b)
	m := int64(v &^ (1 << 63))
	if v>>63 != 0 {
		return -m
	}
	return m
}

// PutOfft stores v in bsdiff's sign-magnitude little-endian int64 encoding.
func PutOfft(b []byte, v int64) {
	u := uint64(v)
	if v < 0 {
		u = uint64(-v) | 1<<63
	}
	binary.LittleEndian.PutUint64(b, u)
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("bspatch: %s: %w", fmt.Sprintf(format, args...), ErrCorrupt)
}

// ParseHeader decodes and checks the header of patch.
func ParseHeader(patch []byte) (Header, error) {
	var h Header
	if len(patch) < HeaderSize {
		return h, corrupt("patch of %d bytes is shorter than the header", len(patch))
	}
	switch {
	case string(patch[:8]) == "BSDIFF40":
		h.Magic = "BSDIFF40"
		h.Compressors = [3]Compressor{BZ2, BZ2, BZ2}
	case string(patch[:5]) == "BSDF2":
		h.Magic = "BSDF2"
		for i := range 3 {
			c := Compressor(patch[5+i])
			if c > Brotli {
				return h, corrupt("unknown compressor %d for stream %d", c, i)
			}
			h.Compressors[i] = c
		}
	default:
		return h, corrupt("bad magic %q", patch[:8])
	}
	h.CtrlLen, h.DiffLen, h.NewSize = Offt(patch[8:]), Offt(patch[16:]), Offt(patch[24:])
	rest := int64(len(patch) - HeaderSize)
	if h.CtrlLen < 0 || h.DiffLen < 0 || h.NewSize < 0 || h.CtrlLen > rest || h.DiffLen > rest-h.CtrlLen {
		return h, corrupt("lengths ctrl=%d diff=%d new=%d do not fit a %d-byte patch", h.CtrlLen, h.DiffLen, h.NewSize, len(patch))
	}
	return h, nil
}

func decompressor(c Compressor, b []byte) (io.Reader, error) {
	switch c {
	case None:
		return bytes.NewReader(b), nil
	case BZ2:
		return bzip2.NewReader(bytes.NewReader(b)), nil
	case Brotli:
		return brotli.NewReader(bytes.NewReader(b)), nil
	}
	return nil, corrupt("unknown compressor %d", c)
}

// Apply writes the new file described by patch, reconstructed from old, to w.
// Exactly Header.NewSize bytes are written on success.
func Apply(old, patch []byte, w io.Writer) error {
	h, err := ParseHeader(patch)
	if err != nil {
		return err
	}
	p := patch[HeaderSize:]
	cr, err := decompressor(h.Compressors[0], p[:h.CtrlLen])
	if err != nil {
		return err
	}
	dr, err := decompressor(h.Compressors[1], p[h.CtrlLen:h.CtrlLen+h.DiffLen])
	if err != nil {
		return err
	}
	er, err := decompressor(h.Compressors[2], p[h.CtrlLen+h.DiffLen:])
	if err != nil {
		return err
	}
	ctrl := bufio.NewReaderSize(cr, 4096)
	buf := make([]byte, min(h.NewSize, 1<<20))
	nbuf := 0
	flush := func() error {
		if nbuf == 0 {
			return nil
		}
		_, err := w.Write(buf[:nbuf])
		nbuf = 0
		return err
	}
	oldSize := int64(len(old))
	var newPos, oldPos int64
	var t [24]byte
	readStream := func(r io.Reader, dst []byte, name string) error {
		if _, err := io.ReadFull(r, dst); err != nil {
			return corrupt("%s stream at new offset %d: %v", name, newPos, err)
		}
		return nil
	}
	for newPos < h.NewSize {
		if _, err := io.ReadFull(ctrl, t[:]); err != nil {
			return corrupt("control stream ends at new offset %d of %d: %v", newPos, h.NewSize, err)
		}
		x, y, z := Offt(t[0:]), Offt(t[8:]), Offt(t[16:])
		if x < 0 || y < 0 || x > h.NewSize-newPos || y > h.NewSize-newPos-x {
			return corrupt("control triple (%d,%d,%d) at new offset %d overruns new size %d", x, y, z, newPos, h.NewSize)
		}
		for x > 0 {
			n := min(x, int64(len(buf)-nbuf))
			chunk := buf[nbuf : nbuf+int(n)]
			if err := readStream(dr, chunk, "diff"); err != nil {
				return err
			}
			// Add old bytes where oldPos+i is inside old.
			lo, hi := max(0, -oldPos), min(n, oldSize-oldPos)
			if lo < hi {
				addBytes(chunk[lo:hi], old[oldPos+lo:oldPos+hi])
			}
			nbuf += int(n)
			newPos += n
			oldPos += n
			x -= n
			if nbuf == len(buf) {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		for y > 0 {
			n := min(y, int64(len(buf)-nbuf))
			if err := readStream(er, buf[nbuf:nbuf+int(n)], "extra"); err != nil {
				return err
			}
			nbuf += int(n)
			newPos += n
			y -= n
			if nbuf == len(buf) {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		const lim = 1 << 62
		if z > lim || z < -lim || oldPos+z > lim || oldPos+z < -lim {
			return corrupt("old seek %d at new offset %d out of range", z, newPos)
		}
		oldPos += z
	}
	return flush()
}

// addBytes adds src to dst bytewise (mod 256), eight lanes at a time.
func addBytes(dst, src []byte) {
	const hi = 0x8080808080808080
	i := 0
	for ; i+8 <= len(dst); i += 8 {
		a := binary.LittleEndian.Uint64(dst[i:])
		b := binary.LittleEndian.Uint64(src[i:])
		binary.LittleEndian.PutUint64(dst[i:], ((a&^hi)+(b&^hi))^((a^b)&hi))
	}
	for ; i < len(dst); i++ {
		dst[i] += src[i]
	}
}
