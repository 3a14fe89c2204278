package xzdec

import "encoding/binary"

// A filter converts buf in place (decoding direction) and returns how many
// leading bytes are final. Unconverted tail bytes are offered again with
// more data, or passed through unchanged at the end of the block. pos is the
// uncompressed stream position of buf[0] (plus the filter's start offset).
type filter interface {
	convert(buf []byte, pos uint32) int
}

// Filter IDs (xz file format §5.3).
const (
	idDelta    = 0x03
	idX86      = 0x04
	idPowerPC  = 0x05
	idIA64     = 0x06
	idARM      = 0x07
	idARMThumb = 0x08
	idSPARC    = 0x09
	idARM64    = 0x0A
	idRISCV    = 0x0B
	idLZMA2    = 0x21
)

var filterNames = map[uint64]string{
	idDelta: "delta", idX86: "x86", idPowerPC: "powerpc", idIA64: "ia64", idARM: "arm",
	idARMThumb: "armthumb", idSPARC: "sparc", idARM64: "arm64", idRISCV: "riscv", idLZMA2: "lzma2",
}

// x86 BCJ: E8/E9 call/jmp rel32 operands were converted to absolute
// addresses. prevMask remembers which of the previous bytes were E8/E9 so
// false positives are handled exactly as the encoder did.
type x86 struct {
	prevMask uint32
}

func isMSByte(b byte) bool { return b == 0 || b == 0xFF }

var x86Allowed = [8]bool{true, true, true, false, true, false, false, false}
var x86BitNum = [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}

func (f *x86) convert(buf []byte, pos uint32) int {
	if len(buf) <= 4 {
		return 0
	}
	size := len(buf) - 4
	prevPos := -1
	mask := f.prevMask
	i := 0
	for ; i < size; i++ {
		if buf[i]&0xFE != 0xE8 {
			continue
		}
		dist := i - prevPos
		if dist > 3 {
			mask = 0
		} else {
			mask = (mask << uint(dist-1)) & 7
			if mask != 0 {
				b := buf[i+4-int(x86BitNum[mask])]
				if !x86Allowed[mask] || isMSByte(b) {
					prevPos = i
					mask = mask<<1 | 1
					continue
				}
			}
		}
		prevPos = i
		if !isMSByte(buf[i+4]) {
			mask = mask<<1 | 1
			continue
		}
		src := binary.LittleEndian.Uint32(buf[i+1:])
		var dest uint32
		for {
			dest = src - (pos + uint32(i) + 5)
			if mask == 0 {
				break
			}
			j := x86BitNum[mask] * 8
			if !isMSByte(byte(dest >> (24 - j))) {
				break
			}
			src = dest ^ (1<<(32-j) - 1)
		}
		dest &= 0x01FFFFFF
		dest |= 0 - (dest & 0x01000000)
		binary.LittleEndian.PutUint32(buf[i+1:], dest)
		i += 4
	}
	dist := i - prevPos
	if dist > 3 {
		f.prevMask = 0
	} else {
		f.prevMask = mask << uint(dist-1)
	}
	return i
}

// arm: BL instructions (little-endian, condition "always").
type arm struct{}

func (arm) convert(buf []byte, pos uint32) int {
	i := 0
	for ; i+4 <= len(buf); i += 4 {
		if buf[i+3] != 0xEB {
			continue
		}
		a := uint32(buf[i]) | uint32(buf[i+1])<<8 | uint32(buf[i+2])<<16
		a = (a<<2 - (pos + uint32(i) + 8)) >> 2
		buf[i], buf[i+1], buf[i+2] = byte(a), byte(a>>8), byte(a>>16)
	}
	return i
}

// armThumb: Thumb BL instruction pairs.
type armThumb struct{}

func (armThumb) convert(buf []byte, pos uint32) int {
	i := 0
	for ; i+4 <= len(buf); i += 2 {
		if buf[i+1]&0xF8 != 0xF0 || buf[i+3]&0xF8 != 0xF8 {
			continue
		}
		a := (uint32(buf[i+1])&7)<<19 | uint32(buf[i])<<11 | (uint32(buf[i+3])&7)<<8 | uint32(buf[i+2])
		a = (a<<1 - (pos + uint32(i) + 4)) >> 1
		buf[i+1] = byte(0xF0 | (a>>19)&7)
		buf[i] = byte(a >> 11)
		buf[i+3] = byte(0xF8 | (a>>8)&7)
		buf[i+2] = byte(a)
		i += 2
	}
	return i
}

// powerPC: big-endian "bl" with AA=0, LK=1.
type powerPC struct{}

func (powerPC) convert(buf []byte, pos uint32) int {
	i := 0
	for ; i+4 <= len(buf); i += 4 {
		in := binary.BigEndian.Uint32(buf[i:])
		if in&0xFC000003 != 0x48000001 {
			continue
		}
		in = ((in&0x03FFFFFC)-(pos+uint32(i)))&0x03FFFFFC | 0x48000001
		binary.BigEndian.PutUint32(buf[i:], in)
	}
	return i
}

// sparc: call instructions.
type sparc struct{}

func (sparc) convert(buf []byte, pos uint32) int {
	i := 0
	for ; i+4 <= len(buf); i += 4 {
		in := binary.BigEndian.Uint32(buf[i:])
		if in>>22 != 0x100 && in>>22 != 0x1FF {
			continue
		}
		in = (in<<2 - (pos + uint32(i))) >> 2
		in = (0x40000000 - in&0x400000) | 0x40000000 | in&0x3FFFFF
		binary.BigEndian.PutUint32(buf[i:], in)
	}
	return i
}

// arm64: BL and ADRP (xz 5.4 filter).
type arm64 struct{}

func (arm64) convert(buf []byte, pos uint32) int {
	i := 0
	for ; i+4 <= len(buf); i += 4 {
		pc := pos + uint32(i)
		in := binary.LittleEndian.Uint32(buf[i:])
		switch {
		case in>>26 == 0x25: // BL
			in = 0x94000000 | (in-(pc>>2))&0x03FFFFFF
			binary.LittleEndian.PutUint32(buf[i:], in)
		case in&0x9F000000 == 0x90000000: // ADRP
			src := (in>>29)&3 | (in>>3)&0x001FFFFC
			if (src+0x00020000)&0x001C0000 != 0 {
				continue
			}
			dest := src - (pc >> 12)
			in &= 0x9000001F
			in |= (dest & 3) << 29
			in |= (dest & 0x0003FFFC) << 3
			in |= (0 - (dest & 0x00020000)) & 0x00E00000
			binary.LittleEndian.PutUint32(buf[i:], in)
		}
	}
	return i
}

// delta: each byte is stored as the difference to the byte dist positions
// earlier.
type delta struct {
	dist int
	hist [256]byte
	pos  byte
}

func (d *delta) convert(buf []byte, _ uint32) int {
	for i := range buf {
		b := buf[i] + d.hist[byte(int(d.pos)-d.dist)]
		buf[i] = b
		d.hist[d.pos] = b
		d.pos++
	}
	return len(buf)
}

// ia64: branch slots of Itanium instruction bundles (16 bytes each).
type ia64 struct{}

// ia64Slots maps the bundle template (low 5 bits) to a mask of the slots
// that may hold a branch.
var ia64Slots = [32]byte{
	0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0,
	4, 4, 6, 6, 0, 0, 7, 7,
	4, 4, 0, 0, 4, 4, 0, 0,
}

func (ia64) convert(buf []byte, pos uint32) int {
	i := 0
	for ; i+16 <= len(buf); i += 16 {
		mask := ia64Slots[buf[i]&0x1F]
		for slot, bitPos := 0, 5; slot < 3; slot, bitPos = slot+1, bitPos+41 {
			if (mask>>slot)&1 == 0 {
				continue
			}
			bytePos, bitRes := bitPos>>3, uint(bitPos&7)
			var instr uint64
			for j := 0; j < 6; j++ {
				instr |= uint64(buf[i+j+bytePos]) << (8 * j)
			}
			norm := instr >> bitRes
			if (norm>>37)&0x0F != 0x05 || (norm>>9)&0x07 != 0 {
				continue
			}
			a := uint32(norm>>13) & 0x0FFFFF
			a |= (uint32(norm>>36) & 1) << 20
			a = (a<<4 - (pos + uint32(i))) >> 4
			norm &^= uint64(0x8FFFFF) << 13
			norm |= uint64(a&0x0FFFFF) << 13
			norm |= uint64(a&0x100000) << (36 - 20)
			instr &= 1<<bitRes - 1
			instr |= norm << bitRes
			for j := 0; j < 6; j++ {
				buf[i+j+bytePos] = byte(instr >> (8 * j))
			}
		}
	}
	return i
}
