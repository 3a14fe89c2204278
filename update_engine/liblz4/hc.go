package liblz4

import (
	"encoding/binary"
	"sync"
)

// LZ4 HC (lz4hc.c of liblz4 1.9.4), hash-chain levels 1…9 of
// LZ4_compress_HC_destSize on a fresh state. Positions are indexes into the
// input; table indexes are positions + 64 KiB, as liblz4 starts a fresh
// state's indexes at 64 KiB.

const (
	hcHashLog   = 15
	hcStart     = 64 << 10
	optimalML   = mlMask - 1 + minMatch // 18
	hcMaxAttemp = 256
)

// hcSearches is the chain length per level (k_clTable, levels 0…9).
var hcSearches = [10]int{2, 2, 2, 4, 8, 16, 32, 64, 128, 256}

// HCMaxLevel is the highest level CompressHCDestSize implements; levels
// 10…12 use liblz4's optimal parser.
const HCMaxLevel = 9

var hcPool = sync.Pool{New: func() any { return new(hcState) }}

type hcState struct {
	src          []byte // input
	hash         [1 << hcHashLog]uint32
	chain        [1 << 16]uint16
	nextToUpdate uint32
}

func (h *hcState) read32(p int) uint32 { return binary.LittleEndian.Uint32(h.src[p:]) }
func (h *hcState) read16(p int) uint16 { return binary.LittleEndian.Uint16(h.src[p:]) }
func (h *hcState) hashAt(p int) uint32 { return (h.read32(p) * 2654435761) >> (32 - hcHashLog) }

func (h *hcState) count(a, b, limit int) int {
	return commonPrefix(h.src, a, b, limit)
}

func (h *hcState) insert(ip int) {
	target := uint32(ip + hcStart)
	for idx := h.nextToUpdate; idx < target; idx++ {
		hv := h.hashAt(int(idx) - hcStart)
		delta := idx - h.hash[hv]
		if delta > maxDistance {
			delta = maxDistance
		}
		h.chain[uint16(idx)] = uint16(delta)
		h.hash[hv] = idx
	}
	h.nextToUpdate = target
}

// countPattern counts bytes from ip (< iEnd) repeating the 4-byte pattern
// (read little endian) as LZ4HC_countPattern does on a 64-bit machine.
func (h *hcState) countPattern(ip, iEnd int, pattern uint32) int {
	start := ip
	p64 := uint64(pattern) | uint64(pattern)<<32
	for ip < iEnd-7 {
		diff := binary.LittleEndian.Uint64(h.src[ip:]) ^ p64
		if diff == 0 {
			ip += 8
			continue
		}
		for diff&0xFF == 0 {
			ip++
			diff >>= 8
		}
		return ip - start
	}
	pb := p64
	for ip < iEnd && h.src[ip] == byte(pb) {
		ip++
		pb >>= 8
	}
	return ip - start
}

// reverseCountPattern counts the bytes before ip (down to iLow) repeating
// the pattern.
func (h *hcState) reverseCountPattern(ip, iLow int, pattern uint32) int {
	start := ip
	for ip >= iLow+4 {
		if h.read32(ip-4) != pattern {
			break
		}
		ip -= 4
	}
	k := 3
	for ip > iLow {
		if h.src[ip-1] != byte(pattern>>(8*k)) {
			break
		}
		ip--
		k--
		if k < 0 {
			k = 3
		}
	}
	return start - ip
}

func (h *hcState) countBack(ip, match, iMin, mMin int) int {
	back := 0
	lim := max(iMin-ip, mMin-match)
	for back > lim && h.src[ip+back-1] == h.src[match+back-1] {
		back--
	}
	return back
}

// widerMatch is LZ4HC_InsertAndGetWiderMatch without dictionaries, chain
// swap or favorDecSpeed. It returns the new longest length; *matchpos and
// *startpos change only when a longer match is found.
func (h *hcState) widerMatch(ip, iLowLimit, iHighLimit, longest int, matchpos, startpos *int, maxAttempts int, patternAnalysis bool) int {
	ipIndex := uint32(ip + hcStart)
	const lowLimit = hcStart
	lowestMatchIndex := uint32(lowLimit)
	if lowLimit+maxDistance+1 <= ipIndex {
		lowestMatchIndex = ipIndex - maxDistance
	}
	lookBack := ip - iLowLimit
	nbAttempts := maxAttempts
	pattern := h.read32(ip)
	const (
		repUntested = iota
		repNot
		repConfirmed
	)
	repeat := repUntested
	srcPatternLength := 0
	h.insert(ip)
	matchIndex := h.hash[h.hashAt(ip)]
	for matchIndex >= lowestMatchIndex && nbAttempts > 0 {
		nbAttempts--
		mp := int(matchIndex) - hcStart
		if h.read16(iLowLimit+longest-1) == h.read16(mp-lookBack+longest-1) && h.read32(mp) == pattern {
			back := 0
			if lookBack != 0 {
				back = h.countBack(ip, mp, iLowLimit, 0)
			}
			ml := minMatch + h.count(ip+minMatch, mp+minMatch, iHighLimit) - back
			if ml > longest {
				longest = ml
				*matchpos = mp + back
				*startpos = ip + back
			}
		}
		dist := uint32(h.chain[uint16(matchIndex)])
		if patternAnalysis && dist == 1 {
			cand := matchIndex - 1
			if repeat == repUntested {
				if pattern&0xFFFF == pattern>>16 && pattern&0xFF == pattern>>24 {
					repeat = repConfirmed
					srcPatternLength = h.countPattern(ip+4, iHighLimit, pattern) + 4
				} else {
					repeat = repNot
				}
			}
			if repeat == repConfirmed && cand >= lowestMatchIndex {
				cp := int(cand) - hcStart
				if h.read32(cp) == pattern {
					fwd := h.countPattern(cp+4, iHighLimit, pattern) + 4
					backLen := h.reverseCountPattern(cp, 0, pattern)
					backLen = int(cand) - int(max(cand-uint32(backLen), lowestMatchIndex))
					seg := backLen + fwd
					if seg >= srcPatternLength && fwd <= srcPatternLength {
						matchIndex = cand + uint32(fwd) - uint32(srcPatternLength)
					} else {
						matchIndex = cand - uint32(backLen)
						if lookBack == 0 {
							maxML := min(seg, srcPatternLength)
							if longest < maxML {
								if ipIndex-matchIndex > maxDistance {
									break
								}
								longest = maxML
								*matchpos = int(matchIndex) - hcStart
								*startpos = ip
							}
							d := uint32(h.chain[uint16(matchIndex)])
							if d > matchIndex {
								break
							}
							matchIndex -= d
						}
					}
					continue
				}
			}
		}
		matchIndex -= dist
	}
	return longest
}

// CompressHCDestSize is LZ4_compress_HC_destSize for levels 1…9 (level < 1
// means 9, liblz4's default): it compresses as much of src as fits in
// dstSize bytes and returns the block and the source bytes it holds.
func CompressHCDestSize(src []byte, dstSize, level int) ([]byte, int) {
	out, n, _ := CompressHCDestSizeBudget(src, dstSize, level, nil)
	return out, n
}

// CompressHCDestSizeBudget is CompressHCDestSize that gives up (ok false)
// once *budget match searches are spent, when budget is not nil: liblz4
// scans input that yields no match to its end, so a crafted caller asking
// for many small blocks of a large input would otherwise make it quadratic.
func CompressHCDestSizeBudget(src []byte, dstSize, level int, budget *int64) (block []byte, consumed int, ok bool) {
	if level < 1 {
		level = 9
	}
	if level > HCMaxLevel || dstSize < 1 {
		return nil, 0, true
	}
	maxAttempts := hcSearches[level]
	patternAnalysis := maxAttempts > 128
	// A fresh, zeroed state per call, as LZ4_initStreamHC makes it. The
	// input is read in place (never past iend; see the bounds in the
	// helpers), so each call costs what it compresses, not the input size.
	h := hcPool.Get().(*hcState)
	defer hcPool.Put(h)
	*h = hcState{src: src, nextToUpdate: hcStart}
	iend := len(src)
	mflimit := iend - mfLimit
	matchlimit := iend - lastLiterals
	oend := dstSize - lastLiterals
	out := make([]byte, 0, dstSize)
	ip, anchor := 0, 0

	// encode appends one sequence; false when it would not fit.
	encode := func(ml, ref int, limited bool) bool {
		length := ip - anchor
		if limited && len(out)+1+length/255+length+2+1+lastLiterals > oend {
			return false
		}
		mark := len(out)
		out = append(out, 0)
		if length >= runMask {
			out[mark] = runMask << 4
			l := length - runMask
			for ; l >= 255; l -= 255 {
				out = append(out, 255)
			}
			out = append(out, byte(l))
		} else {
			out[mark] = byte(length << 4)
		}
		out = append(out, src[anchor:ip]...)
		out = binary.LittleEndian.AppendUint16(out, uint16(ip-ref))
		l := ml - minMatch
		if limited && len(out)+l/255+1+lastLiterals > oend {
			out = out[:mark]
			return false
		}
		if l >= mlMask {
			out[mark] += mlMask
			l -= mlMask
			for ; l >= 510; l -= 510 {
				out = append(out, 255, 255)
			}
			if l >= 255 {
				l -= 255
				out = append(out, 255)
			}
			out = append(out, byte(l))
		} else {
			out[mark] += byte(l)
		}
		ip += ml
		anchor = ip
		return true
	}
	var ml, ref int
	overflow := func() {
		ll := ip - anchor
		llTotal := 1 + (ll+240)/255 + ll
		maxLitPos := oend - 3
		if len(out)+llTotal <= maxLitPos {
			bytesLeft := maxLitPos - (len(out) + llTotal)
			maxMl := minMatch + mlMask - 1 + bytesLeft*255
			if ml > maxMl {
				ml = maxMl
			}
			if (oend+lastLiterals)-(len(out)+llTotal+2)-1+ml >= mfLimit {
				encode(ml, ref, false)
			}
		}
	}

	if len(src) >= minLength {
	main:
		for ip <= mflimit {
			if budget != nil {
				if *budget <= 0 {
					return nil, 0, false
				}
				*budget--
			}
			ml = h.widerMatch(ip, ip, matchlimit, minMatch-1, &ref, new(int), maxAttempts, patternAnalysis)
			if ml < minMatch {
				ip++
				continue
			}
			start0, ref0, ml0 := ip, ref, ml
			var ml2, start2, ref2, ml3, start3, ref3 int
		search2:
			if ip+ml <= mflimit {
				ml2 = h.widerMatch(ip+ml-2, ip, matchlimit, ml, &ref2, &start2, maxAttempts, patternAnalysis)
			} else {
				ml2 = ml
			}
			if ml2 == ml {
				if !encode(ml, ref, true) {
					overflow()
					break main
				}
				continue
			}
			if start0 < ip && start2 < ip+ml0 {
				ip, ref, ml = start0, ref0, ml0
			}
			if start2-ip < 3 {
				ml, ip, ref = ml2, start2, ref2
				goto search2
			}
		search3:
			if start2-ip < optimalML {
				newML := min(ml, optimalML)
				if ip+newML > start2+ml2-minMatch {
					newML = start2 - ip + ml2 - minMatch
				}
				if c := newML - (start2 - ip); c > 0 {
					start2 += c
					ref2 += c
					ml2 -= c
				}
			}
			if start2+ml2 <= mflimit {
				ml3 = h.widerMatch(start2+ml2-3, start2, matchlimit, ml2, &ref3, &start3, maxAttempts, patternAnalysis)
			} else {
				ml3 = ml2
			}
			if ml3 == ml2 {
				if start2 < ip+ml {
					ml = start2 - ip
				}
				if !encode(ml, ref, true) {
					overflow()
					break main
				}
				ip = start2
				if !encode(ml2, ref2, true) {
					ml, ref = ml2, ref2
					overflow()
					break main
				}
				continue
			}
			if start3 < ip+ml+3 {
				if start3 >= ip+ml {
					if start2 < ip+ml {
						c := ip + ml - start2
						start2 += c
						ref2 += c
						ml2 -= c
						if ml2 < minMatch {
							start2, ref2, ml2 = start3, ref3, ml3
						}
					}
					if !encode(ml, ref, true) {
						overflow()
						break main
					}
					ip, ref, ml = start3, ref3, ml3
					start0, ref0, ml0 = start2, ref2, ml2
					goto search2
				}
				start2, ref2, ml2 = start3, ref3, ml3
				goto search3
			}
			if start2 < ip+ml {
				if start2-ip < optimalML {
					ml = min(ml, optimalML)
					if ip+ml > start2+ml2-minMatch {
						ml = start2 - ip + ml2 - minMatch
					}
					if c := ml - (start2 - ip); c > 0 {
						start2 += c
						ref2 += c
						ml2 -= c
					}
				} else {
					ml = start2 - ip
				}
			}
			if !encode(ml, ref, true) {
				overflow()
				break main
			}
			ip, ref, ml = start2, ref2, ml2
			start2, ref2, ml2 = start3, ref3, ml3
			goto search3
		}
	}
	// last literals
	lastRun := iend - anchor
	llAdd := (lastRun + 255 - runMask) / 255
	oend += lastLiterals
	if len(out)+1+llAdd+lastRun > oend {
		lastRun = max(0, oend-len(out)-1)
		llAdd = (lastRun + 256 - runMask) / 256
		lastRun -= llAdd
	}
	if lastRun >= runMask {
		acc := lastRun - runMask
		out = append(out, runMask<<4)
		for ; acc >= 255; acc -= 255 {
			out = append(out, 255)
		}
		out = append(out, byte(acc))
	} else {
		out = append(out, byte(lastRun<<4))
	}
	out = append(out, src[anchor:anchor+lastRun]...)
	return out, anchor + lastRun, true
}
