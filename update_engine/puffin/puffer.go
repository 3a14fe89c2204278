package puffin

import (
	"errors"
	"fmt"
)

var (
	// ErrCorrupt marks malformed deflate data, puff streams and patches.
	ErrCorrupt = errors.New("puffin: corrupt data")
	// ErrUnrepresentable marks valid deflate data that a puff stream cannot
	// express (see the package documentation).
	ErrUnrepresentable = errors.New("puffin: deflate encoding not expressible as a puff")
	// ErrUnsupported marks patch features this package does not implement.
	ErrUnsupported = errors.New("puffin: unsupported")
)

// DeflateError reports where in the deflate input a problem is.
type DeflateError struct {
	Bit uint64 // bit offset in the buffer being puffed
	Msg string
	Err error // ErrCorrupt or ErrUnrepresentable
}

func (e *DeflateError) Error() string {
	return fmt.Sprintf("puffin: deflate at bit %d (byte %#x): %s", e.Bit, e.Bit/8, e.Msg)
}

func (e *DeflateError) Unwrap() error { return e.Err }

func corruptAt(bit uint64, format string, args ...any) error {
	return &DeflateError{Bit: bit, Msg: fmt.Sprintf(format, args...), Err: ErrCorrupt}
}

const maxLiteralRun = 1<<16 + 127 // 65663

// puffWriter appends puff items to out.
type puffWriter struct {
	out  []byte
	lits []byte // pending literal run
}

func (w *puffWriter) flushLits() {
	l := w.lits
	for len(l) > 0 {
		n := min(len(l), maxLiteralRun)
		if n <= 127 {
			w.out = append(w.out, byte(n-1))
		} else {
			w.out = append(w.out, 0x7F, byte((n-128)>>8), byte(n-128))
		}
		w.out = append(w.out, l[:n]...)
		l = l[n:]
	}
	w.lits = w.lits[:0]
}

func (w *puffWriter) meta(m []byte) {
	w.flushLits()
	w.out = append(w.out, byte((len(m)-1)>>8), byte(len(m)-1))
	w.out = append(w.out, m...)
}

func (w *puffWriter) lenDist(length, dist int) {
	w.flushLits()
	if length <= 129 {
		w.out = append(w.out, 0x80|byte(length-3))
	} else {
		w.out = append(w.out, 0xFF, byte(length-130))
	}
	w.out = append(w.out, byte((dist-1)>>8), byte(dist-1))
}

func (w *puffWriter) eob() {
	w.flushLits()
	w.out = append(w.out, 0xFF, 0x81)
}

// puffer holds the dynamic tables reused across blocks.
type puffer struct {
	lit, dist, cl huffman
	lens          [320]uint8
	meta          []byte
	// aosp, when set, makes block record in unsafe whether AOSP's puffer
	// would misread the block when given a buffer ending at r.end.
	aosp   bool
	unsafe bool
}

// block parses one deflate block at r.pos and appends its puff to w.
func (p *puffer) block(r *bitReader, w *puffWriter) (final bool, err error) {
	start := r.pos
	if r.left() < 3 {
		return false, corruptAt(r.pos, "truncated block header")
	}
	hdr := r.bits(3)
	final = hdr&1 == 1
	typ := hdr >> 1
	b0 := byte(hdr&1)<<7 | byte(typ)<<5
	var lit, dist *huffman
	switch typ {
	case 0:
		pad := uint((8 - r.pos&7) & 7)
		v := r.bits(pad)
		if v > 31 {
			return false, &DeflateError{Bit: start, Msg: fmt.Sprintf("stored block padding bits %#x do not fit the puff header", v), Err: ErrUnrepresentable}
		}
		if r.left() < 32 {
			return false, corruptAt(start, "truncated stored block header")
		}
		n := r.bits(16)
		if nn := r.bits(16); n^nn != 0xFFFF {
			return false, corruptAt(start, "stored block LEN %#x NLEN %#x", n, nn)
		}
		if r.left() < uint64(n)*8 {
			return false, corruptAt(start, "stored block of %d bytes is truncated", n)
		}
		i := r.pos / 8
		w.meta([]byte{b0 | byte(v)})
		w.lits = append(w.lits, r.data[i:i+uint64(n)]...)
		w.eob()
		r.pos += uint64(n) * 8
		return final, nil
	case 1:
		w.meta([]byte{b0})
		lit, dist = &fixedLit, &fixedDist
	case 2:
		if err := p.dynamicHeader(r, b0); err != nil {
			return false, err
		}
		w.meta(p.meta)
		lit, dist = &p.lit, &p.dist
	default:
		return false, corruptAt(start, "block type 3")
	}
	eobLen := uint(lit.lens[256])
	for {
		at := r.pos
		v := r.peek()
		sym, n, ok := lit.decode(v)
		if !ok {
			return false, corruptAt(at, "invalid literal/length code")
		}
		if p.aosp && r.left() < uint64(lit.maxLen) && (eobLen == 0 || n > eobLen) {
			p.unsafe = true
		}
		r.pos += uint64(n)
		switch {
		case sym < 256:
			w.lits = append(w.lits, byte(sym))
		case sym == 256:
			if r.pos > r.end {
				return false, corruptAt(at, "truncated block")
			}
			w.eob()
			return final, nil
		case sym > 285:
			return false, corruptAt(at, "invalid length symbol %d", sym)
		default:
			li := sym - 257
			length := int(lengthBase[li]) + int(r.bits(uint(lengthExtra[li])))
			if sym == 284 && length == 258 {
				return false, &DeflateError{Bit: at, Msg: "length 258 coded as symbol 284", Err: ErrUnrepresentable}
			}
			if p.aosp && r.left() < uint64(dist.maxLen) {
				p.unsafe = true
			}
			dat := r.pos
			dsym, dn, ok := dist.decode(r.peek())
			if !ok || dsym >= 30 {
				return false, corruptAt(dat, "invalid distance code")
			}
			r.pos += uint64(dn)
			d := int(distBase[dsym]) + int(r.bits(uint(distExtra[dsym])))
			if r.pos > r.end {
				return false, corruptAt(at, "truncated block")
			}
			w.lenDist(length, d)
		}
		if r.pos > r.end {
			return false, corruptAt(at, "truncated block")
		}
	}
}

// dynamicHeader reads a dynamic block's code lengths into p.meta and builds
// p.lit and p.dist.
func (p *puffer) dynamicHeader(r *bitReader, b0 byte) error {
	start := r.pos - 3
	if r.left() < 14 {
		return corruptAt(start, "truncated dynamic header")
	}
	hlit, hdist, hclen := r.bits(5), r.bits(5), r.bits(4)
	nlit, ndist, ncl := int(hlit)+257, int(hdist)+1, int(hclen)+4
	if nlit > 286 || ndist > 30 {
		return corruptAt(start, "dynamic header with %d literal/length and %d distance codes", nlit, ndist)
	}
	m := append(p.meta[:0], b0, byte(hlit), byte(hdist), byte(hclen))
	var cl [19]uint8
	for i := range ncl {
		v := uint8(r.bits(3))
		cl[clOrder[i]] = v
		if i%2 == 0 {
			m = append(m, v<<4)
		} else {
			m[len(m)-1] |= v
		}
	}
	if !p.cl.build(cl[:]) {
		return corruptAt(start, "over-subscribed code-length code")
	}
	total := nlit + ndist
	for i := 0; i < total; {
		at := r.pos
		if p.aosp && r.left() < uint64(p.cl.maxLen) {
			p.unsafe = true
		}
		sym, n, ok := p.cl.decode(r.peek())
		if !ok {
			return corruptAt(at, "invalid code-length code")
		}
		r.pos += uint64(n)
		if sym < 16 {
			p.lens[i] = uint8(sym)
			i++
			m = append(m, byte(sym))
			continue
		}
		var rep int
		var val uint8
		switch sym {
		case 16:
			if i == 0 {
				return corruptAt(at, "repeat of a code length before the first one")
			}
			if i == nlit && p.aosp {
				p.unsafe = true // AOSP reads the distance lengths on their own
			}
			x := r.bits(2)
			rep, val = 3+int(x), p.lens[i-1]
			m = append(m, byte(16+x))
		case 17:
			x := r.bits(3)
			rep = 3 + int(x)
			m = append(m, byte(20+x))
		default:
			x := r.bits(7)
			rep = 11 + int(x)
			m = append(m, byte(28+x))
		}
		if i+rep > total {
			return corruptAt(at, "code-length repeat runs past the %d lengths", total)
		}
		if p.aosp && i < nlit && i+rep > nlit {
			p.unsafe = true
		}
		for k := 0; k < rep; k++ {
			p.lens[i+k] = val
		}
		i += rep
	}
	if r.pos > r.end {
		return corruptAt(start, "truncated dynamic header")
	}
	if !p.lit.build(p.lens[:nlit]) {
		return corruptAt(start, "over-subscribed literal/length code")
	}
	if !p.dist.build(p.lens[nlit:total]) {
		return corruptAt(start, "over-subscribed distance code")
	}
	p.meta = m
	return nil
}

// Puff returns the puff stream of the deflate blocks in data starting at bit
// offset start, parsed the way AOSP puffs one deflate extent: blocks are read
// while at least 8 bits of data remain. It also returns the bit offset where
// the last block ended.
func Puff(data []byte, start uint64) ([]byte, uint64, error) {
	var p puffer
	w := &puffWriter{}
	end, err := p.extent(data, start, w)
	return w.out, end, err
}

func (p *puffer) extent(data []byte, start uint64, w *puffWriter) (uint64, error) {
	r := newBitReader(data, start)
	if start > r.end {
		return 0, corruptAt(start, "deflate starts past the end of its %d bytes", len(data))
	}
	for r.left() >= 8 {
		if _, err := p.block(r, w); err != nil {
			return 0, err
		}
	}
	return r.pos, nil
}
