// Package liblz4 reproduces, bit for bit, the LZ4 block output of liblz4
// 1.9.4's LZ4_compress_destSize (spec payload-format.md §3.7): LZ4DIFF
// operations re-compress each destination block with the generator's liblz4
// and check its SHA-256, so any other LZ4 encoder (pierrec/lz4 included)
// produces the wrong bytes. Written from the algorithm's description; the
// test compiles a helper against Debian's liblz4 and compares outputs.
//
// Only the stateless, dictionary-free paths are implemented, on a fresh
// state: LZ4_compress_destSize (acceleration 1; the 16-bit position table for
// inputs under 64 KiB + 11 bytes, the 32-bit one with the 5-byte hash above),
// and LZ4_compress_HC_destSize and LZ4_compress_HC for every level: the
// hash-chain parser of levels 1…9 (hc.go) and the optimal parser of levels
// 10…12 (opt.go), levels clamped as liblz4 clamps them. liblz4 1.10 changed
// levels 1…2 (its "lz4mid" strategy); this package matches 1.9.4.
package liblz4

import (
	"encoding/binary"
	"math/bits"
)

const (
	minMatch     = 4
	lastLiterals = 5
	mfLimit      = 12
	minLength    = mfLimit + 1
	hashLog      = 12 // LZ4_MEMORY_USAGE 14
	limit64K     = 64<<10 + mfLimit - 1
	maxDistance  = 65535
	skipTrigger  = 6
	runMask      = 15
	mlMask       = 15
)

// CompressBound is LZ4_compressBound.
func CompressBound(n int) int { return n + n/255 + 16 }

type state struct {
	src   []byte
	u16   bool
	table []uint32
}

func (s *state) hash(p int) uint32 {
	if s.u16 {
		return (binary.LittleEndian.Uint32(s.src[p:]) * 2654435761) >> (32 - (hashLog + 1))
	}
	v := binary.LittleEndian.Uint64(s.src[p:])
	return uint32(((v << 24) * 889523592379) >> (64 - hashLog))
}

func (s *state) read32(p int) uint32 { return binary.LittleEndian.Uint32(s.src[p:]) }

// count is LZ4_count: the length of the common prefix of src[a:] and
// src[b:], a < limit.
func (s *state) count(a, b, limit int) int {
	return commonPrefix(s.src, a, b, limit)
}

// CompressDestSize compresses as much of src as fits in dstSize bytes, as
// LZ4_compress_destSize does, and returns the block and the number of source
// bytes it holds.
func CompressDestSize(src []byte, dstSize int) ([]byte, int) {
	if dstSize < 1 {
		return nil, 0
	}
	if len(src) == 0 {
		return []byte{0}, 0
	}
	fill := dstSize < CompressBound(len(src))
	s := &state{src: src, u16: len(src) < limit64K}
	if s.u16 {
		s.table = make([]uint32, 1<<(hashLog+1))
	} else {
		s.table = make([]uint32, 1<<hashLog)
	}
	// The input is read in place: hashes read at most 8 bytes at positions
	// ≤ iend−11, so never past the end.
	iend := len(src)
	mflimitPlusOne := iend - mfLimit + 1
	matchlimit := iend - lastLiterals
	out := make([]byte, 0, dstSize)
	olimit := dstSize
	anchor, ip := 0, 0

	put := func(p int) { s.table[s.hash(p)] = uint32(p) }
	lastLits := func() ([]byte, int) {
		lastRun := iend - anchor
		if fill && len(out)+lastRun+1+(lastRun+255-runMask)/255 > olimit {
			lastRun = max(0, olimit-len(out)-1)
			lastRun -= (lastRun + 256 - runMask) / 256
		}
		out = appendLastLiterals(out, src[anchor:anchor+lastRun])
		return out, anchor + lastRun
	}
	if len(src) < minLength {
		return lastLits()
	}
	put(ip)
	ip++
	forwardH := s.hash(ip)
	for {
		var match int
		// find a match
		forwardIp := ip
		step := 1
		searchMatchNb := 1 << skipTrigger
		for {
			h := forwardH
			cur := forwardIp
			matchIndex := int(s.table[h])
			ip = forwardIp
			forwardIp += step
			step = searchMatchNb >> skipTrigger
			searchMatchNb++
			if forwardIp > mflimitPlusOne {
				return lastLits()
			}
			match = matchIndex
			forwardH = s.hash(forwardIp)
			s.table[h] = uint32(cur)
			if !s.u16 && matchIndex+maxDistance < cur {
				continue
			}
			if s.read32(match) == s.read32(ip) {
				break
			}
		}
		// catch up
		filledIp := ip
		for ip > anchor && match > 0 && src[ip-1] == src[match-1] {
			ip--
			match--
		}
		// literals
		litLength := ip - anchor
		token := len(out)
		out = append(out, 0)
		if fill && len(out)+(litLength+240)/255+litLength+2+1+mfLimit-minMatch > olimit {
			out = out[:token]
			return lastLits()
		}
		if litLength >= runMask {
			l := litLength - runMask
			out[token] = runMask << 4
			for ; l >= 255; l -= 255 {
				out = append(out, 255)
			}
			out = append(out, byte(l))
		} else {
			out[token] = byte(litLength << 4)
		}
		out = append(out, src[anchor:ip]...)
	nextMatch:
		for {
			if fill && len(out)+2+1+mfLimit-minMatch > olimit {
				// the match is too close to the end: drop the sequence
				out = out[:token]
				return lastLits()
			}
			out = binary.LittleEndian.AppendUint16(out, uint16(ip-match))
			matchCode := s.count(ip+minMatch, match+minMatch, matchlimit)
			ip += matchCode + minMatch
			if fill && len(out)+1+lastLiterals+(matchCode+240)/255 > olimit {
				newCode := 15 - 1 + (olimit-len(out)-1-lastLiterals)*255
				ip -= matchCode - newCode
				matchCode = newCode
				if ip <= filledIp {
					for p := ip; p <= filledIp; p++ {
						s.table[s.hash(p)] = 0
					}
				}
			}
			if matchCode >= mlMask {
				out[token] += mlMask
				matchCode -= mlMask
				for ; matchCode >= 255; matchCode -= 255 {
					out = append(out, 255)
				}
				out = append(out, byte(matchCode))
			} else {
				out[token] += byte(matchCode)
			}
			anchor = ip
			if ip >= mflimitPlusOne {
				return lastLits()
			}
			put(ip - 2)
			// test next position
			h := s.hash(ip)
			matchIndex := int(s.table[h])
			s.table[h] = uint32(ip)
			if (s.u16 || matchIndex+maxDistance >= ip) && s.read32(matchIndex) == s.read32(ip) {
				match = matchIndex
				token = len(out)
				out = append(out, 0)
				continue nextMatch // filledIp keeps the value of the last search
			}
			break
		}
		ip++
		forwardH = s.hash(ip)
	}
}

// commonPrefix is LZ4_count: the length of the common prefix of src[a:] and
// src[b:] (b < a), stopping at limit.
func commonPrefix(src []byte, a, b, limit int) int {
	start := a
	for a+8 <= limit {
		x := binary.LittleEndian.Uint64(src[a:]) ^ binary.LittleEndian.Uint64(src[b:])
		if x != 0 {
			return a - start + bits.TrailingZeros64(x)/8
		}
		a += 8
		b += 8
	}
	for a < limit && src[a] == src[b] {
		a++
		b++
	}
	return a - start
}
