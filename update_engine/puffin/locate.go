package puffin

import (
	"cmp"
	"encoding/binary"
	"slices"
)

// LocateStream returns the compressed (fixed and dynamic) blocks of the raw
// deflate stream starting at bit start of data, up to and including its
// final block, and the bit where the stream ends. Stored blocks are parsed
// but not returned, as in AOSP (bsdiff finds their bytes as they are).
// Blocks an AOSP client could not puff (see the package documentation) are
// left out too.
func LocateStream(data []byte, start uint64) ([]BitExtent, uint64, error) {
	var p puffer
	w := &puffWriter{}
	r := newBitReader(data, start)
	var out []BitExtent
	for {
		bstart := r.pos
		w.out = w.out[:0]
		final, err := p.block(r, w)
		if err != nil {
			return nil, 0, err
		}
		if !isStored(data, bstart) && aospSafe(data, bstart, r.pos) {
			out = append(out, BitExtent{bstart, r.pos - bstart})
		}
		if final {
			return out, r.pos, nil
		}
	}
}

func isStored(data []byte, bit uint64) bool {
	r := newBitReader(data, bit)
	return r.bits(3)>>1 == 0
}

// aospSafe reports whether AOSP's puffer, given exactly the bytes of the
// block [start, end), puffs it the way this package does.
func aospSafe(data []byte, start, end uint64) bool {
	p := puffer{aosp: true}
	w := &puffWriter{}
	got, err := p.extent(data[:(end+7)/8], start, w)
	return err == nil && got == end && !p.unsafe
}

// LocateGzip returns the deflate blocks of the gzip members starting at byte
// off of data (RFC 1952) and the byte where the last member ends; ok is false
// when no member parses there.
func LocateGzip(data []byte, off int) (deflates []BitExtent, end int, ok bool) {
	pos := off
	for pos+18 <= len(data) && data[pos] == 0x1F && data[pos+1] == 0x8B && data[pos+2] == 8 {
		flag := data[pos+3]
		if flag&0xE0 != 0 {
			break
		}
		i := pos + 10
		if flag&4 != 0 {
			if i+2 > len(data) {
				break
			}
			i += 2 + int(binary.LittleEndian.Uint16(data[i:]))
		}
		for _, f := range []byte{8, 16} {
			if flag&f != 0 {
				for i < len(data) && data[i] != 0 {
					i++
				}
				i++
			}
		}
		if flag&2 != 0 {
			i += 2
		}
		if i >= len(data) {
			break
		}
		d, e, err := LocateStream(data, uint64(i)*8)
		if err != nil {
			break
		}
		next := int((e+7)/8) + 8
		if next > len(data) {
			break
		}
		deflates = append(deflates, d...)
		pos, ok = next, true
	}
	return deflates, pos, ok
}

// LocateZip returns the deflate blocks of every deflated entry whose local
// file header is found in data (signature PK\x03\x04 anywhere, compression
// method 8), the way AOSP's LocateDeflatesInZipArchive scans.
func LocateZip(data []byte) []BitExtent {
	var out []BitExtent
	for pos := 0; pos+30 <= len(data); {
		if binary.LittleEndian.Uint32(data[pos:]) != 0x04034b50 {
			pos++
			continue
		}
		if binary.LittleEndian.Uint16(data[pos+8:]) != 8 {
			pos += 4
			continue
		}
		csize := int(binary.LittleEndian.Uint32(data[pos+18:]))
		hdr := 30 + int(binary.LittleEndian.Uint16(data[pos+26:])) + int(binary.LittleEndian.Uint16(data[pos+28:]))
		if hdr+csize > len(data)-pos {
			pos += 4
			continue
		}
		start := pos + hdr
		d, e, err := LocateStream(data, uint64(start)*8)
		if err != nil {
			pos += 4
			continue
		}
		out = append(out, d...)
		pos = int((e + 7) / 8)
	}
	return out
}

// Locate finds deflate blocks in data: zip entries anywhere, and gzip files
// starting at a multiple of align bytes (files in a filesystem image start
// on a block; 1 scans every byte).
func Locate(data []byte, align int) []BitExtent {
	if align < 1 {
		align = 1
	}
	out := LocateZip(data)
	var gz []BitExtent
	for off := 0; off+18 <= len(data); off += align {
		if data[off] != 0x1F || data[off+1] != 0x8B || data[off+2] != 8 {
			continue
		}
		d, end, ok := LocateGzip(data, off)
		if !ok {
			continue
		}
		gz = append(gz, d...)
		off = (end+align-1)/align*align - align
	}
	if len(gz) == 0 {
		return out
	}
	return mergeExtents(out, gz)
}

// mergeExtents merges two extent lists, keeping the first of any that
// overlap.
func mergeExtents(a, b []BitExtent) []BitExtent {
	all := append(append(make([]BitExtent, 0, len(a)+len(b)), a...), b...)
	slices.SortStableFunc(all, func(x, y BitExtent) int { return cmp.Compare(x.Offset, y.Offset) })
	out := all[:0]
	for _, e := range all {
		if len(out) > 0 && out[len(out)-1].end() > e.Offset {
			continue
		}
		out = append(out, e)
	}
	return out
}
