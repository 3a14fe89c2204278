package xzdec

import (
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

// rangeDec reads one LZMA chunk (at most 64 KiB) from a fixed array indexed
// by uint16, so the hot path has no bounds check and corrupt data that runs
// past the chunk wraps around instead of panicking; chunk() then sees
// ip != packed and reports the corruption.
type rangeDec struct {
	in   *[1 << 16]byte
	ip   int
	rng  uint32
	code uint32
}

func (rc *rangeDec) init(buf *[1 << 16]byte, chunk []byte) bool {
	if len(chunk) < 5 || chunk[0] != 0 {
		return false
	}
	copy(buf[:], chunk)
	rc.in, rc.ip = buf, 5
	rc.rng = 0xFFFFFFFF
	rc.code = uint32(chunk[1])<<24 | uint32(chunk[2])<<16 | uint32(chunk[3])<<8 | uint32(chunk[4])
	return true
}

func (rc *rangeDec) normalize() {
	if rc.rng < 1<<24 {
		rc.rng <<= 8
		rc.code = rc.code<<8 | uint32(rc.in[uint16(rc.ip)])
		rc.ip++
	}
}

func (rc *rangeDec) bit(p *uint16) uint32 {
	rc.normalize()
	bound := (rc.rng >> 11) * uint32(*p)
	if rc.code < bound {
		rc.rng = bound
		*p += (1<<11 - *p) >> 5
		return 0
	}
	rc.rng -= bound
	rc.code -= bound
	*p -= *p >> 5
	return 1
}

func (rc *rangeDec) tree(probs []uint16, bits uint) uint32 {
	m := uint32(1)
	for range bits {
		m = m<<1 | rc.bit(&probs[m])
	}
	return m - 1<<bits
}

func (rc *rangeDec) reverse(probs []uint16, bits uint) uint32 {
	m, sym := uint32(1), uint32(0)
	for i := range bits {
		b := rc.bit(&probs[m])
		m = m<<1 | b
		sym |= b << i
	}
	return sym
}

func (rc *rangeDec) direct(bits uint) uint32 {
	var r uint32
	for range bits {
		rc.normalize()
		rc.rng >>= 1
		t := (rc.code - rc.rng) >> 31 // 1 if code < rng
		rc.code -= rc.rng & (t - 1)
		r = r<<1 | (1 - t)
	}
	return r
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

func (l *lenDec) decode(rc *rangeDec, posState uint32) uint32 {
	if rc.bit(&l.choice) == 0 {
		return rc.tree(l.low[posState][:], 3)
	}
	if rc.bit(&l.choice2) == 0 {
		return 8 + rc.tree(l.mid[posState][:], 3)
	}
	return 16 + rc.tree(l.high[:], 8)
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
	rc            rangeDec
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

// makeRoom slides the window so that n more bytes fit, keeping a dictionary
// of history and everything not yet returned.
func (d *lzma2Dec) makeRoom(n int) {
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
	if !d.rc.init(d.chunkBuf, d.in[d.ip:d.ip+packed]) {
		return false, fmt.Errorf("lzma2: bad range coder start")
	}
	d.makeRoom(unpacked)
	if err := d.decode(unpacked); err != nil {
		return false, err
	}
	d.rc.normalize()
	if d.rc.ip != packed || d.rc.code != 0 {
		return false, fmt.Errorf("lzma2: chunk of %d bytes consumed %d (code %#x)", packed, d.rc.ip, d.rc.code)
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
func (d *lzma2Dec) decode(n int) error {
	rc := &d.rc
	win := d.win
	pos := d.pos
	end := pos + n
	hist := d.filled // history before pos
	base := pos      // window index where this chunk starts
	pbMask := uint32(1)<<d.pb - 1
	lpMask := uint32(1)<<d.lp - 1
	lc := d.lc
	state := d.state
	rep0, rep1, rep2, rep3 := d.rep[0], d.rep[1], d.rep[2], d.rep[3]
	tpos := d.tpos
	for pos < end {
		posState := uint32(tpos) & pbMask
		if rc.bit(&d.isMatch[state*lzPosStatesMx+posState]) == 0 {
			var prev uint32
			if hist+(pos-base) > 0 {
				prev = uint32(win[pos-1])
			}
			lit := d.literal[0x300*(((uint32(tpos)&lpMask)<<lc)+prev>>(8-lc)):][:0x300]
			sym := uint32(1)
			if state >= 7 {
				if int(rep0) >= hist+(pos-base) {
					return fmt.Errorf("lzma2: distance %d beyond %d bytes of history", rep0+1, hist+(pos-base))
				}
				mb := uint32(win[pos-int(rep0)-1])
				for sym < 0x100 {
					mbit := (mb >> 7) & 1
					mb <<= 1
					b := rc.bit(&lit[0x100+mbit<<8+sym])
					sym = sym<<1 | b
					if mbit != b {
						break
					}
				}
			}
			for sym < 0x100 {
				sym = sym<<1 | rc.bit(&lit[sym])
			}
			win[pos] = byte(sym)
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
		var length uint32
		if rc.bit(&d.isRep[state]) == 0 {
			rep3, rep2, rep1 = rep2, rep1, rep0
			length = d.lenD.decode(rc, posState)
			if state < 7 {
				state = 7
			} else {
				state = 10
			}
			lenState := min(length, 3)
			slot := rc.tree(d.posSlot[lenState][:], 6)
			if slot < 4 {
				rep0 = slot
			} else {
				nd := uint(slot>>1 - 1)
				dist := (2 | slot&1) << nd
				if slot < lzEndPosModel {
					dist += rc.reverse(d.specPos[int(dist)-int(slot):], nd)
				} else {
					dist += rc.direct(nd-4) << 4
					dist += rc.reverse(d.align[:], 4)
				}
				rep0 = dist
				if rep0 == 0xFFFFFFFF {
					return fmt.Errorf("lzma2: end-of-payload marker inside a chunk")
				}
			}
		} else {
			if rc.bit(&d.isRepG0[state]) == 0 {
				if rc.bit(&d.isRep0Long[state*lzPosStatesMx+posState]) == 0 {
					if state < 7 {
						state = 9
					} else {
						state = 11
					}
					if int(rep0) >= hist+(pos-base) {
						return fmt.Errorf("lzma2: distance %d beyond %d bytes of history", rep0+1, hist+(pos-base))
					}
					win[pos] = win[pos-int(rep0)-1]
					pos++
					tpos++
					continue
				}
			} else {
				var dist uint32
				if rc.bit(&d.isRepG1[state]) == 0 {
					dist = rep1
				} else {
					if rc.bit(&d.isRepG2[state]) == 0 {
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
			length = d.repLenD.decode(rc, posState)
			if state < 7 {
				state = 8
			} else {
				state = 11
			}
		}
		l := int(length) + lzMatchMinLen
		dist := int(rep0) + 1
		if dist > hist+(pos-base) || dist > d.dictSize {
			return fmt.Errorf("lzma2: distance %d beyond %d bytes of history", dist, hist+(pos-base))
		}
		if l > end-pos {
			return fmt.Errorf("lzma2: match of %d bytes crosses the chunk end", l)
		}
		src := pos - dist
		if dist >= l && l > 16 {
			copy(win[pos:pos+l], win[src:src+l])
		} else {
			// Short or overlapping: a byte loop beats a memmove call.
			d, s := win[pos:pos+l], win[src:src+l]
			for i := range d {
				d[i] = s[i]
			}
		}
		pos += l
		tpos += uint64(l)
	}
	d.filled += pos - d.pos
	d.pos = pos
	d.tpos = tpos
	d.state = state
	d.rep = [4]uint32{rep0, rep1, rep2, rep3}
	return nil
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

// consumed is how many input bytes the LZMA2 data used.
func (d *lzma2Dec) consumed() int { return d.ip }
