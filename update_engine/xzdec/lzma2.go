package xzdec

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// This file is an LZMA2 decoder (xz file format §5.3.1, LZMA as in the LZMA
// SDK / xz-embedded). It decodes whole LZMA2 chunks (at most 2 MiB of
// output each) into a linear window that keeps at least one dictionary of
// history, so the hot loop needs no ring-buffer arithmetic.

const (
	lzNumStates   = 12
	lzPosStatesMx = 16
	lzProbInit    = 1 << 10
	lzEndPosModel = 14
	lzFullDist    = 128
	lzMatchMinLen = 2
)

// rc is the range decoder over one LZMA chunk (at most 64 KiB), copied into
// a fixed array indexed by uint16, so the hot path has no bounds check and
// corrupt data that runs past the chunk wraps around instead of panicking;
// chunk() then sees ip != packed and reports the corruption.
//
// rc is passed and returned by value (r, b = r.bit(p)): a small struct that
// is never address-taken stays in registers through the inlined bit decoder,
// where a pointer receiver would make every bit a load and a store.
type rc struct {
	in   *[1 << 16]byte
	ip   uint32
	rng  uint32
	code uint32
}

func newRC(buf *[1 << 16]byte, chunk []byte) (rc, bool) {
	if len(chunk) < 5 || chunk[0] != 0 {
		return rc{}, false
	}
	copy(buf[:], chunk)
	code := uint32(chunk[1])<<24 | uint32(chunk[2])<<16 | uint32(chunk[3])<<8 | uint32(chunk[4])
	return rc{in: buf, ip: 5, rng: 0xFFFFFFFF, code: code}, true
}

func (r rc) norm() rc {
	if r.rng < 1<<24 {
		r.rng <<= 8
		r.code = r.code<<8 | uint32(r.in[uint16(r.ip)])
		r.ip++
	}
	return r
}

// bit decodes one bit with the adaptive probability *p. It is written to
// stay under the inlining budget.
func (r rc) bit(p *uint16) (rc, uint32) {
	if r.rng < 1<<24 {
		r.rng <<= 8
		r.code = r.code<<8 | uint32(r.in[uint16(r.ip)])
		r.ip++
	}
	v := uint32(*p)
	bound := (r.rng >> 11) * v
	b := uint32(0)
	if r.code < bound {
		r.rng = bound
		v += (1<<11 - v) >> 5
	} else {
		r.rng -= bound
		r.code -= bound
		v -= v >> 5
		b = 1
	}
	*p = uint16(v)
	return r, b
}

// tree decodes a bit tree of n bits, most significant bit first, from
// probs[1:1<<n]. Here and in reverse, literal and matchedLiteral the bit
// decoder of rc.bit is written out by hand (it is just over the inlining
// budget). Slot and length bits are skewed enough for the branch predictor;
// reverse (alignment and low distance bits) and the literals are decoded
// without a branch on the bit, as those are close to random and a
// mispredicted branch costs more than the few extra instructions (mask is
// all ones when the bit is 0, code < bound).
func (r rc) tree(probs []uint16, n uint) (rc, uint32) {
	in, ip, rng, code := r.in, r.ip, r.rng, r.code
	m := uint32(1)
	end := uint32(1) << n
	probs = probs[:end] // one bounds check; m < end below
	for m < end {
		if rng < 1<<24 {
			rng <<= 8
			code = code<<8 | uint32(in[uint16(ip)])
			ip++
		}
		p := &probs[m]
		v := uint32(*p)
		bound := (rng >> 11) * v
		if code < bound {
			rng = bound
			*p = uint16(v + (1<<11-v)>>5)
			m <<= 1
		} else {
			rng -= bound
			code -= bound
			*p = uint16(v - v>>5)
			m = m<<1 | 1
		}
	}
	return rc{in, ip, rng, code}, m - end
}

// reverse decodes a bit tree of n bits, least significant bit first.
func (r rc) reverse(probs []uint16, n uint) (rc, uint32) {
	in, ip, rng, code := r.in, r.ip, r.rng, r.code
	m, sym := uint32(1), uint32(0)
	for i := range n {
		if rng < 1<<24 {
			rng <<= 8
			code = code<<8 | uint32(in[uint16(ip)])
			ip++
		}
		p := &probs[m]
		v := uint32(*p)
		bound := (rng >> 11) * v
		mask := uint32(int64(uint64(code)-uint64(bound)) >> 63)
		rng = bound&mask | (rng-bound)&^mask
		code -= bound &^ mask
		*p = uint16((v+(1<<11-v)>>5)&mask | (v-v>>5)&^mask)
		b := mask + 1
		m = m<<1 | b
		sym |= b << i
	}
	return rc{in, ip, rng, code}, sym
}

// direct decodes n bits of probability one half.
func (r rc) direct(n uint) (rc, uint32) {
	var v uint32
	for range n {
		r = r.norm()
		r.rng >>= 1
		t := (r.code - r.rng) >> 31 // 1 if code < rng
		r.code -= r.rng & (t - 1)
		v = v<<1 | (1 - t)
	}
	return r, v
}

// literal decodes a byte with the 0x300 probabilities of its context.
func (r rc) literal(probs *[0x300]uint16) (rc, byte) {
	in, ip, rng, code := r.in, r.ip, r.rng, r.code
	sym := uint32(1)
	for range 8 {
		if rng < 1<<24 {
			rng <<= 8
			code = code<<8 | uint32(in[uint16(ip)])
			ip++
		}
		p := &probs[sym&0xFF]
		v := uint32(*p)
		bound := (rng >> 11) * v
		// Literal bits are hard to predict: decoded without a branch.
		// m is all ones when the bit is 0 (code < bound).
		m := uint32(int64(uint64(code)-uint64(bound)) >> 63)
		rng = bound&m | (rng-bound)&^m
		code -= bound &^ m
		*p = uint16((v+(1<<11-v)>>5)&m | (v-v>>5)&^m)
		sym = sym<<1 | (m + 1)
	}
	return rc{in, ip, rng, code}, byte(sym)
}

// matchedLiteral decodes a byte after a match, using the byte at rep0
// (match) as extra context: while the decoded bits equal match's, the
// probabilities at 0x100 (match bit 0) or 0x200 (match bit 1) are used, and
// after the first difference the plain ones. offs is 0x100 while the bits
// agree and 0 afterwards, which keeps the loop free of that branch.
func (r rc) matchedLiteral(probs *[0x300]uint16, match uint32) (rc, byte) {
	in, ip, rng, code := r.in, r.ip, r.rng, r.code
	sym, offs := uint32(1), uint32(0x100)
	for range 8 {
		match <<= 1
		t := offs & match // 0x100 if still matching and the match bit is 1
		if rng < 1<<24 {
			rng <<= 8
			code = code<<8 | uint32(in[uint16(ip)])
			ip++
		}
		p := &probs[offs+t+sym&0xFF]
		v := uint32(*p)
		bound := (rng >> 11) * v
		// Still matching iff the bit equals the match bit: offs becomes
		// offs^t after a 0 and t after a 1. Decoded without a branch, like
		// literal: m is all ones when the bit is 0 (code < bound).
		m := uint32(int64(uint64(code)-uint64(bound)) >> 63)
		rng = bound&m | (rng-bound)&^m
		code -= bound &^ m
		*p = uint16((v+(1<<11-v)>>5)&m | (v-v>>5)&^m)
		sym = sym<<1 | (m + 1)
		offs = t ^ (offs & m)
	}
	return rc{in, ip, rng, code}, byte(sym)
}

type lenDec struct {
	choice, choice2 uint16
	low             [lzPosStatesMx][8]uint16
	mid             [lzPosStatesMx][8]uint16
	high            [256]uint16
}

func (l *lenDec) reset() {
	l.choice, l.choice2 = lzProbInit, lzProbInit
	for i := range l.low {
		for j := range l.low[i] {
			l.low[i][j], l.mid[i][j] = lzProbInit, lzProbInit
		}
	}
	for i := range l.high {
		l.high[i] = lzProbInit
	}
}

func (l *lenDec) decode(r rc, posState uint32) (rc, uint32) {
	var b, v uint32
	if r, b = r.bit(&l.choice); b == 0 {
		r, v = r.tree(l.low[posState&(lzPosStatesMx-1)][:], 3)
		return r, v
	}
	if r, b = r.bit(&l.choice2); b == 0 {
		r, v = r.tree(l.mid[posState&(lzPosStatesMx-1)][:], 3)
		return r, 8 + v
	}
	r, v = r.tree(l.high[:], 8)
	return r, 16 + v
}

// lzma2Dec holds the LZMA state and the window.
type lzma2Dec struct {
	dictSize int
	// win[:pos] is decoded data since the last dictionary reset, minus what
	// slid out; win[start:pos] has not been returned yet.
	win        []byte
	pos, start int
	filled     int // bytes available as history (<= dictSize after a slide)

	lc, lp, pb    uint
	state         uint32
	rep           [4]uint32
	isMatch       [lzNumStates * lzPosStatesMx]uint16
	isRep         [lzNumStates]uint16
	isRepG0       [lzNumStates]uint16
	isRepG1       [lzNumStates]uint16
	isRepG2       [lzNumStates]uint16
	isRep0Long    [lzNumStates * lzPosStatesMx]uint16
	posSlot       [4][64]uint16
	specPos       [lzFullDist - lzEndPosModel + 1]uint16 // index 0 unused
	align         [16]uint16
	lenD, repLenD lenDec
	literal       []uint16
	tpos          uint64 // position since the last dictionary reset
	needDictReset bool
	needProps     bool
	chunkBuf      *[1 << 16]byte
	in            []byte // LZMA2 data, starting with the next chunk
	ip            int
	eos           bool
}

// decPool keeps decoders (window and probability arrays) between blocks:
// full payloads decode thousands of 2 MiB blobs.
var decPool sync.Pool

func newLZMA2(in []byte, dictSize int) *lzma2Dec {
	d, _ := decPool.Get().(*lzma2Dec)
	if d == nil {
		d = &lzma2Dec{}
	}
	win, lit, cb := d.win, d.literal, d.chunkBuf
	*d = lzma2Dec{in: in, dictSize: dictSize, needDictReset: true, needProps: true, win: win, literal: lit, chunkBuf: cb}
	return d
}

// release returns d to the pool; d must not be used afterwards.
func (d *lzma2Dec) release() {
	d.in = nil
	decPool.Put(d)
}

func (d *lzma2Dec) resetState() {
	d.state = 0
	d.rep = [4]uint32{}
	for _, s := range [][]uint16{d.isMatch[:], d.isRep[:], d.isRepG0[:], d.isRepG1[:], d.isRepG2[:], d.isRep0Long[:],
		d.specPos[:], d.align[:], d.literal} {
		for i := range s {
			s[i] = lzProbInit
		}
	}
	for i := range d.posSlot {
		for j := range d.posSlot[i] {
			d.posSlot[i][j] = lzProbInit
		}
	}
	d.lenD.reset()
	d.repLenD.reset()
}

// winSlack is room past the decoded data for the match copy's last word.
const winSlack = 8

// makeRoom slides the window so that n more bytes fit, keeping a dictionary
// of history and everything not yet returned.
func (d *lzma2Dec) makeRoom(n int) {
	n += winSlack
	if d.pos+n <= len(d.win) {
		return
	}
	keep := min(d.filled, d.dictSize)
	from := min(d.pos-keep, d.start)
	if from > 0 && d.pos-from+n <= len(d.win) {
		copy(d.win, d.win[from:d.pos])
		d.pos -= from
		d.start -= from
		d.filled = min(d.filled, d.pos)
		return
	}
	// Grow: room for a dictionary of history plus a few chunks.
	size := max(2*(d.pos-from+n), 1<<16)
	nw := make([]byte, size)
	copy(nw, d.win[from:d.pos])
	d.win = nw
	d.pos -= from
	d.start -= from
	d.filled = min(d.filled, d.pos)
}

// chunk decodes the next LZMA2 chunk into the window. It returns false at
// the end marker.
func (d *lzma2Dec) chunk() (bool, error) {
	if d.ip >= len(d.in) {
		return false, fmt.Errorf("lzma2: missing end marker")
	}
	c := d.in[d.ip]
	if c == 0 {
		d.ip++
		d.eos = true
		return false, nil
	}
	if c == 1 || c == 2 {
		if len(d.in)-d.ip < 3 {
			return false, fmt.Errorf("lzma2: truncated chunk header")
		}
		n := int(d.in[d.ip+1])<<8 | int(d.in[d.ip+2]) + 1
		if c == 1 {
			d.dictReset()
		} else if d.needDictReset {
			return false, fmt.Errorf("lzma2: first chunk does not reset the dictionary")
		}
		d.ip += 3
		if len(d.in)-d.ip < n {
			return false, fmt.Errorf("lzma2: truncated uncompressed chunk")
		}
		d.makeRoom(n)
		copy(d.win[d.pos:], d.in[d.ip:d.ip+n])
		d.pos += n
		d.filled += n
		d.tpos += uint64(n)
		d.ip += n
		return true, nil
	}
	if c < 0x80 {
		return false, fmt.Errorf("lzma2: invalid control byte %#x", c)
	}
	if len(d.in)-d.ip < 5 {
		return false, fmt.Errorf("lzma2: truncated chunk header")
	}
	unpacked := int(c&0x1F)<<16 | int(d.in[d.ip+1])<<8 | int(d.in[d.ip+2]) + 1
	packed := int(d.in[d.ip+3])<<8 | int(d.in[d.ip+4]) + 1
	d.ip += 5
	reset := (c >> 5) & 3
	if reset == 3 {
		d.dictReset()
	} else if d.needDictReset {
		return false, fmt.Errorf("lzma2: first chunk does not reset the dictionary")
	}
	if reset >= 2 {
		if d.ip >= len(d.in) {
			return false, fmt.Errorf("lzma2: truncated chunk header")
		}
		p := d.in[d.ip]
		d.ip++
		if p >= 9*5*5 {
			return false, fmt.Errorf("lzma2: invalid properties byte %#x", p)
		}
		d.lc, d.lp, d.pb = uint(p%9), uint(p/9%5), uint(p/45)
		if d.lc+d.lp > 4 {
			return false, fmt.Errorf("lzma2: lc+lp = %d > 4", d.lc+d.lp)
		}
		n := 0x300 << (d.lc + d.lp)
		if cap(d.literal) < n {
			d.literal = make([]uint16, n)
		}
		d.literal = d.literal[:n]
		d.needProps = false
	} else if d.needProps {
		return false, fmt.Errorf("lzma2: first LZMA chunk has no properties")
	}
	if reset >= 1 {
		d.resetState()
	}
	if len(d.in)-d.ip < packed {
		return false, fmt.Errorf("lzma2: truncated compressed chunk")
	}
	if d.chunkBuf == nil {
		d.chunkBuf = new([1 << 16]byte)
	}
	r, ok := newRC(d.chunkBuf, d.in[d.ip:d.ip+packed])
	if !ok {
		return false, fmt.Errorf("lzma2: bad range coder start")
	}
	d.makeRoom(unpacked)
	r, err := d.decode(r, unpacked)
	if err != nil {
		return false, err
	}
	r = r.norm()
	if int(r.ip) != packed || r.code != 0 {
		return false, fmt.Errorf("lzma2: chunk of %d bytes consumed %d (code %#x)", packed, r.ip, r.code)
	}
	d.ip += packed
	return true, nil
}

func (d *lzma2Dec) dictReset() {
	d.needDictReset = false
	d.filled = 0
	d.tpos = 0
}

// decode produces exactly n bytes at win[pos:].
func (d *lzma2Dec) decode(r rc, n int) (rc, error) {
	win := d.win // len(win) >= pos+n+winSlack (makeRoom)
	pos := d.pos
	end := pos + n
	hist := d.filled - d.pos // pos+hist bytes of history precede win[pos] (hist <= 0)
	pbMask := uint32(1)<<d.pb - 1
	lpMask := uint32(1)<<d.lp - 1
	lc := d.lc
	state := d.state
	rep0, rep1, rep2, rep3 := d.rep[0], d.rep[1], d.rep[2], d.rep[3]
	tpos := uint32(d.tpos) // only the low bits matter (pb, lp <= 4)
	var b uint32
	for pos < end {
		posState := tpos & pbMask
		// r.bit(&d.isMatch[…]) written out: it runs once per symbol.
		if r.rng < 1<<24 {
			r.rng <<= 8
			r.code = r.code<<8 | uint32(r.in[uint16(r.ip)])
			r.ip++
		}
		p := &d.isMatch[state*lzPosStatesMx+posState]
		v := uint32(*p)
		bound := (r.rng >> 11) * v
		if r.code < bound {
			r.rng = bound
			*p = uint16(v + (1<<11-v)>>5)
			var prev uint32
			if pos+hist > 0 {
				prev = uint32(win[pos-1])
			}
			ctx := 0x300 * (((tpos & lpMask) << lc) + prev>>(8-lc))
			lit := (*[0x300]uint16)(d.literal[ctx : ctx+0x300])
			var c byte
			if state < 7 {
				r, c = r.literal(lit)
			} else {
				if int(rep0) >= pos+hist {
					return r, fmt.Errorf("lzma2: distance %d beyond %d bytes of history", rep0+1, pos+hist)
				}
				r, c = r.matchedLiteral(lit, uint32(win[pos-int(rep0)-1]))
			}
			win[pos] = c
			pos++
			tpos++
			switch {
			case state < 4:
				state = 0
			case state < 10:
				state -= 3
			default:
				state -= 6
			}
			continue
		}
		r.rng -= bound
		r.code -= bound
		*p = uint16(v - v>>5)
		var length uint32
		if r, b = r.bit(&d.isRep[state]); b == 0 {
			rep3, rep2, rep1 = rep2, rep1, rep0
			r, length = d.lenD.decode(r, posState)
			if state < 7 {
				state = 7
			} else {
				state = 10
			}
			var slot uint32
			r, slot = r.tree(d.posSlot[min(length, 3)][:], 6)
			if slot < 4 {
				rep0 = slot
			} else {
				nd := uint(slot>>1 - 1)
				dist := (2 | slot&1) << nd
				var v uint32
				if slot < lzEndPosModel {
					r, v = r.reverse(d.specPos[int(dist)-int(slot):], nd)
					dist += v
				} else {
					r, v = r.direct(nd - 4)
					dist += v << 4
					r, v = r.reverse(d.align[:], 4)
					dist += v
				}
				rep0 = dist
				if rep0 == 0xFFFFFFFF {
					return r, fmt.Errorf("lzma2: end-of-payload marker inside a chunk")
				}
			}
		} else {
			if r, b = r.bit(&d.isRepG0[state]); b == 0 {
				if r, b = r.bit(&d.isRep0Long[state*lzPosStatesMx+posState]); b == 0 {
					if state < 7 {
						state = 9
					} else {
						state = 11
					}
					if int(rep0) >= pos+hist {
						return r, fmt.Errorf("lzma2: distance %d beyond %d bytes of history", rep0+1, pos+hist)
					}
					win[pos] = win[pos-int(rep0)-1]
					pos++
					tpos++
					continue
				}
			} else {
				var dist uint32
				if r, b = r.bit(&d.isRepG1[state]); b == 0 {
					dist = rep1
				} else {
					if r, b = r.bit(&d.isRepG2[state]); b == 0 {
						dist = rep2
					} else {
						dist = rep3
						rep3 = rep2
					}
					rep2 = rep1
				}
				rep1 = rep0
				rep0 = dist
			}
			r, length = d.repLenD.decode(r, posState)
			if state < 7 {
				state = 8
			} else {
				state = 11
			}
		}
		l := int(length) + lzMatchMinLen
		dist := int(rep0) + 1
		if dist > pos+hist || dist > d.dictSize {
			return r, fmt.Errorf("lzma2: distance %d beyond %d bytes of history", dist, pos+hist)
		}
		if l > end-pos {
			return r, fmt.Errorf("lzma2: match of %d bytes crosses the chunk end", l)
		}
		src := pos - dist
		switch {
		case dist >= l && l > 64:
			copy(win[pos:pos+l], win[src:src+l])
		case dist >= 8:
			// 8 bytes at a time, each word read before it is written
			// (dist >= 8); the last word may spill up to 7 bytes past
			// the match into the window's slack.
			for i := 0; i < l; i += 8 {
				binary.LittleEndian.PutUint64(win[pos+i:], binary.LittleEndian.Uint64(win[src+i:]))
			}
		default:
			d, s := win[pos:pos+l], win[src:src+l]
			for i := range d {
				d[i] = s[i]
			}
		}
		pos += l
		tpos += uint32(l)
	}
	d.filled += pos - d.pos
	d.tpos += uint64(pos - d.pos)
	d.pos = pos
	d.state = state
	d.rep = [4]uint32{rep0, rep1, rep2, rep3}
	return r, nil
}

// Read returns decoded bytes; io.EOF after the end marker.
func (d *lzma2Dec) Read(p []byte) (int, error) {
	for d.start == d.pos {
		if d.eos {
			return 0, io.EOF
		}
		if _, err := d.chunk(); err != nil {
			return 0, err
		}
	}
	n := copy(p, d.win[d.start:d.pos])
	d.start += n
	return n, nil
}

// next decodes at least one more byte unless at the end and returns the
// bytes not yet returned, straight from the window: valid until the next
// call. It returns io.EOF after the end marker.
func (d *lzma2Dec) next() ([]byte, error) {
	for d.start == d.pos {
		if d.eos {
			return nil, io.EOF
		}
		if _, err := d.chunk(); err != nil {
			return nil, err
		}
	}
	b := d.win[d.start:d.pos]
	d.start = d.pos
	return b, nil
}

// consumed is how many input bytes the LZMA2 data used.
func (d *lzma2Dec) consumed() int { return d.ip }
