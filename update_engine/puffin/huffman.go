package puffin

// Deflate alphabets (RFC 1951 §3.2.5).
var (
	lengthBase  = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase    = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra   = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
	// order of the code-length code lengths in a dynamic header
	clOrder = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

	lengthCode [259]uint8   // length → index into lengthBase (258 → 28, symbol 285)
	distCode   [32769]uint8 // distance → index into distBase
)

func init() {
	for i := len(lengthBase) - 1; i >= 0; i-- {
		top := 258
		if i < len(lengthBase)-1 {
			top = int(lengthBase[i+1]) - 1
		}
		for l := int(lengthBase[i]); l <= top; l++ {
			lengthCode[l] = uint8(i)
		}
	}
	lengthCode[258] = 28
	for i := range distBase {
		top := 32768
		if i < len(distBase)-1 {
			top = int(distBase[i+1]) - 1
		}
		for d := int(distBase[i]); d <= top; d++ {
			distCode[d] = uint8(i)
		}
	}
	fixedLit.build(fixedLitLens())
	fixedDist.build(fixedDistLens())
}

func fixedLitLens() []uint8 {
	l := make([]uint8, 288)
	for i := range l {
		switch {
		case i < 144:
			l[i] = 8
		case i < 256:
			l[i] = 9
		case i < 280:
			l[i] = 7
		default:
			l[i] = 8
		}
	}
	return l
}

// fixedDistLens: 30 codes of 5 bits, as puffin builds it (codes 30 and 31 of
// RFC 1951's table can never be valid, so they are left out).
func fixedDistLens() []uint8 {
	l := make([]uint8, 30)
	for i := range l {
		l[i] = 5
	}
	return l
}

var fixedLit, fixedDist huffman

const primBits = 9

// huffman is a canonical Huffman code: a decoder (a primary table for codes up
// to primBits bits, canonical search for longer ones) and an encoder (bit-
// reversed codes ready for LSB-first writing).
type huffman struct {
	n      int // symbols
	lens   [320]uint8
	codes  [320]uint16
	maxLen uint
	table  [1 << primBits]uint16 // sym<<4 | len; 0 = longer code or invalid
	count  [16]uint16
	sorted [320]uint16 // symbols ordered by (length, symbol)
}

// build sets up the code for the given lengths. Over-subscribed lengths are
// refused; incomplete codes are allowed (unused codes fail to decode).
func (h *huffman) build(lens []uint8) bool {
	h.n = len(lens)
	h.count = [16]uint16{}
	h.table = [1 << primBits]uint16{}
	h.maxLen = 0
	for i, l := range lens {
		if l > 15 {
			return false
		}
		h.lens[i] = l
		h.count[l]++
		if uint(l) > h.maxLen {
			h.maxLen = uint(l)
		}
	}
	h.count[0] = 0
	left := 1
	for l := 1; l <= 15; l++ {
		left = left<<1 - int(h.count[l])
		if left < 0 {
			return false
		}
	}
	var next, offs [17]uint16
	code := uint16(0)
	for l := 1; l <= 15; l++ {
		code = (code + h.count[l-1]) << 1
		next[l] = code
		offs[l+1] = offs[l] + h.count[l]
	}
	for sym, l := range lens {
		if l == 0 {
			h.codes[sym] = 0
			continue
		}
		c := next[l]
		next[l]++
		rev := uint16(0)
		for k := uint8(0); k < l; k++ {
			rev = rev<<1 | (c>>k)&1
		}
		h.codes[sym] = rev
		h.sorted[offs[l]] = uint16(sym)
		offs[l]++
		if l <= primBits {
			for k := int(rev); k < 1<<primBits; k += 1 << l {
				h.table[k] = uint16(sym)<<4 | uint16(l)
			}
		}
	}
	return true
}

// decode returns the symbol coded at the start of v (LSB first) and its code
// length, or ok=false for a bit pattern that is no code.
func (h *huffman) decode(v uint64) (sym int, n uint, ok bool) {
	if e := h.table[v&(1<<primBits-1)]; e != 0 {
		return int(e >> 4), uint(e & 15), true
	}
	code, first, index := 0, 0, 0
	for l := 1; l <= 15; l++ {
		code |= int(v>>(l-1)) & 1
		cnt := int(h.count[l])
		if code-first < cnt {
			return int(h.sorted[index+code-first]), uint(l), true
		}
		index += cnt
		first = (first + cnt) << 1
		code <<= 1
	}
	return 0, 0, false
}

// write emits sym's code; false if sym has no code.
func (h *huffman) write(w *bitWriter, sym int) bool {
	if sym >= h.n || h.lens[sym] == 0 {
		return false
	}
	w.bits(uint(h.lens[sym]), uint32(h.codes[sym]))
	return true
}
