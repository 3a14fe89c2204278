package liblz4

import (
	"encoding/binary"
	"sync"
)

// LZ4 HC (lz4hc.c of liblz4 1.9.4) on a fresh state: the hash-chain
// parser of levels 1…9 (this file) and the optimal parser of levels 10…12
// (opt.go), in the fillOutput (LZ4_compress_HC_destSize), limitedOutput and
// notLimited (LZ4_compress_HC) modes. Positions are indexes into the input;
// table indexes are positions + 64 KiB, as liblz4 starts a fresh state's
// indexes at 64 KiB.

const (
	hcHashLog   = 15
	hcStart     = 64 << 10
	optimalML   = mlMask - 1 + minMatch // 18
	maxInput    = 0x7E000000            // LZ4_MAX_INPUT_SIZE
	optMinLevel = 10                    // LZ4HC_CLEVEL_OPT_MIN
)

// HCMaxLevel is LZ4HC_CLEVEL_MAX: higher levels compress as this one, as
// liblz4 clamps them; levels below 1 mean 9 (LZ4HC_CLEVEL_DEFAULT).
const HCMaxLevel = 12

// hcParams is liblz4's clTable: the strategy of each level, its number of
// match searches and, for the optimal parser, the match length it takes
// without looking further (sufficient_len).
var hcParams = [HCMaxLevel + 1]struct{ searches, target int }{
	{2, 16}, {2, 16}, {2, 16}, {4, 16}, {8, 16}, {16, 16}, {32, 16}, {64, 16}, {128, 16}, {256, 16},
	{96, 64}, {512, 128}, {16384, optNum},
}

// clampLevel is LZ4_setCompressionLevel's rule.
func clampLevel(level int) int {
	if level < 1 {
		return 9
	}
	return min(level, HCMaxLevel)
}

var hcPool = sync.Pool{New: func() any { return new(hcState) }}

type hcState struct {
	src          []byte // input
	hash         [1 << hcHashLog]uint32
	chain        [1 << 16]uint16
	nextToUpdate uint32
	opt          *[optNum + trailingLits]optCell // the optimal parser's table, never cleared
}

// reset makes h the zeroed state LZ4_initStreamHC gives, over src.
func (h *hcState) reset(src []byte) {
	h.hash = [1 << hcHashLog]uint32{}
	h.chain = [1 << 16]uint16{}
	h.src, h.nextToUpdate = src, hcStart
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

// widerMatch is LZ4HC_InsertAndGetWiderMatch without dictionaries or
// favorDecSpeed. It returns the new longest length; *matchpos and *startpos
// change only when a longer match is found. chainSwap (the optimal parser's
// searches, always with iLowLimit == ip) moves, after each best match, to
// the chain of the position inside the match whose previous occurrence is
// farthest back.
func (h *hcState) widerMatch(ip, iLowLimit, iHighLimit, longest int, matchpos, startpos *int, maxAttempts int, patternAnalysis, chainSwap bool) int {
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
	matchChainPos := uint32(0) // kept across candidates, as liblz4 does
	h.insert(ip)
	matchIndex := h.hash[h.hashAt(ip)]
	tail := h.read16(iLowLimit + longest - 1) // the last 2 bytes a longer match must have
	for matchIndex >= lowestMatchIndex && nbAttempts > 0 {
		nbAttempts--
		mp := int(matchIndex) - hcStart
		matchLength := 0
		if tail == h.read16(mp-lookBack+longest-1) && h.read32(mp) == pattern {
			back := 0
			if lookBack != 0 {
				back = h.countBack(ip, mp, iLowLimit, 0)
			}
			matchLength = minMatch + h.count(ip+minMatch, mp+minMatch, iHighLimit) - back
			if matchLength > longest {
				longest = matchLength
				tail = h.read16(iLowLimit + longest - 1)
				*matchpos = mp + back
				*startpos = ip + back
			}
		}
		if chainSwap && matchLength == longest && matchIndex+uint32(longest) <= ipIndex {
			// Among the positions of the match (sampled ever more sparsely
			// while nothing better turns up), follow the one whose previous
			// occurrence is farthest.
			const kTrigger = 4
			distToNext := uint32(1)
			step, accel := 1, 1<<kTrigger
			for pos := 0; pos < longest-minMatch+1; pos += step {
				cand := uint32(h.chain[uint16(matchIndex+uint32(pos))])
				step = accel >> kTrigger
				accel++
				if cand > distToNext {
					distToNext = cand
					matchChainPos = uint32(pos)
					accel = 1 << kTrigger
				}
			}
			if distToNext > 1 {
				if distToNext > matchIndex {
					break
				}
				matchIndex -= distToNext
				continue
			}
		}
		dist := uint32(h.chain[uint16(matchIndex)])
		if patternAnalysis && dist == 1 && matchChainPos == 0 {
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
								tail = h.read16(iLowLimit + longest - 1)
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
		matchIndex -= uint32(h.chain[uint16(matchIndex+matchChainPos)])
	}
	return longest
}

// limitMode is liblz4's limitedOutput_directive.
type limitMode int

const (
	notLimited    limitMode = iota // the destination holds the bound
	limitedOutput                  // fail (no output) when it does not fit
	fillOutput                     // destSize: compress what fits
)

// seqWriter is the output side of both parsers: it encodes sequences from
// anchor to ip as LZ4HC_encodeSequence does and ends the block as their
// _dest_overflow and _last_literals steps do.
type seqWriter struct {
	src        []byte
	out        []byte
	ip, anchor int
	oend       int // the end the sequences must leave LASTLITERALS before
	limit      limitMode
}

func newSeqWriter(src []byte, dstCap int, limit limitMode) seqWriter {
	w := seqWriter{src: src, limit: limit, oend: dstCap}
	if limit == fillOutput {
		w.oend -= lastLiterals // liblz4's "hack for the LZ4 format restriction"
	}
	w.out = make([]byte, 0, min(dstCap, CompressBound(len(src))))
	return w
}

// encode appends the literals anchor…ip and a match of ml bytes at ref,
// and moves ip and anchor past it. With checks, it returns false and leaves
// the output as it was when the sequence would not fit.
func (w *seqWriter) encode(ml, ref int, checks bool) bool {
	length := w.ip - w.anchor
	if checks && len(w.out)+1+length/255+length+2+1+lastLiterals > w.oend {
		return false
	}
	mark := len(w.out)
	out := append(w.out, 0)
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
	out = append(out, w.src[w.anchor:w.ip]...)
	out = binary.LittleEndian.AppendUint16(out, uint16(w.ip-ref))
	l := ml - minMatch
	if checks && len(out)+l/255+1+lastLiterals > w.oend {
		w.out = out[:mark]
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
	w.out = out
	w.ip += ml
	w.anchor = w.ip
	return true
}

// put is encode with the checks of the mode.
func (w *seqWriter) put(ml, ref int) bool { return w.encode(ml, ref, w.limit != notLimited) }

// overflow is _dest_overflow: the sequence (ml, ref) at ip did not fit.
// In fillOutput mode it writes as much of it as leaves room for the end
// and reports true (go on to the last literals); otherwise the compression
// fails.
func (w *seqWriter) overflow(ml, ref int) bool {
	if w.limit != fillOutput {
		return false
	}
	ll := w.ip - w.anchor
	llTotal := 1 + (ll+240)/255 + ll
	maxLitPos := w.oend - 3
	if len(w.out)+llTotal <= maxLitPos {
		bytesLeft := maxLitPos - (len(w.out) + llTotal)
		ml = min(ml, minMatch+mlMask-1+bytesLeft*255)
		if (w.oend+lastLiterals)-(len(w.out)+llTotal+2)-1+ml >= mfLimit {
			w.encode(ml, ref, false)
		}
	}
	return true
}

// finish writes the last literals (in fillOutput mode as many as fit) and
// returns the block and the source bytes it holds; nil when the block does
// not fit in limitedOutput mode.
func (w *seqWriter) finish() ([]byte, int) {
	lastRun := len(w.src) - w.anchor
	llAdd := (lastRun + 255 - runMask) / 255
	oend := w.oend
	if w.limit == fillOutput {
		oend += lastLiterals
	}
	if w.limit != notLimited && len(w.out)+1+llAdd+lastRun > oend {
		if w.limit == limitedOutput {
			return nil, 0
		}
		lastRun = max(0, oend-len(w.out)-1)
		llAdd = (lastRun + 256 - runMask) / 256
		lastRun -= llAdd
	}
	return appendLastLiterals(w.out, w.src[w.anchor:w.anchor+lastRun]), w.anchor + lastRun
}

// appendLastLiterals appends a block's last sequence to out: a token that
// holds only a literal length, the length's extra bytes, then the literals.
func appendLastLiterals(out, lits []byte) []byte {
	if n := len(lits); n >= runMask {
		acc := n - runMask
		out = append(out, runMask<<4)
		for ; acc >= 255; acc -= 255 {
			out = append(out, 255)
		}
		out = append(out, byte(acc))
	} else {
		out = append(out, byte(n<<4))
	}
	return append(out, lits...)
}

// CompressHCDestSize is LZ4_compress_HC_destSize on a fresh state: it
// compresses as much of src as fits in dstSize bytes and returns the block
// and the source bytes it holds. Levels are clamped as liblz4 clamps them
// (below 1 → 9, above 12 → 12).
func CompressHCDestSize(src []byte, dstSize, level int) ([]byte, int) {
	out, n, _ := CompressHCDestSizeBudget(src, dstSize, level, nil)
	return out, n
}

// CompressHCDestSizeBudget is CompressHCDestSize that gives up (ok false)
// once *budget match searches are spent, when budget is not nil: liblz4
// scans input that yields no match to its end, so a crafted caller asking
// for many small blocks of a large input would otherwise make it quadratic.
func CompressHCDestSizeBudget(src []byte, dstSize, level int, budget *int64) (block []byte, consumed int, ok bool) {
	if dstSize < 1 || len(src) > maxInput {
		return nil, 0, true
	}
	return compressHC(src, dstSize, level, fillOutput, budget)
}

// CompressHC is LZ4_compress_HC on a fresh state: the whole of src as one
// block, or nil when it does not fit in dstCapacity bytes (levels clamped
// as in CompressHCDestSize).
func CompressHC(src []byte, dstCapacity, level int) []byte {
	if len(src) > maxInput {
		return nil
	}
	limit := notLimited
	if dstCapacity < CompressBound(len(src)) {
		limit = limitedOutput
	}
	out, _, _ := compressHC(src, max(dstCapacity, 0), level, limit, nil)
	return out
}

func compressHC(src []byte, dstCap, level int, limit limitMode, budget *int64) ([]byte, int, bool) {
	level = clampLevel(level)
	// A fresh, zeroed state per call, as LZ4_initStreamHC makes it. The
	// input is read in place (never past iend; see the bounds in the
	// helpers), so each call costs what it compresses, not the input size.
	h := hcPool.Get().(*hcState)
	defer hcPool.Put(h)
	h.reset(src)
	defer func() { h.src = nil }()
	w := newSeqWriter(src, dstCap, limit)
	p := hcParams[level]
	if level >= optMinLevel {
		return h.compressOptimal(&w, p.searches, p.target, level == HCMaxLevel, budget)
	}
	return h.compressHashChain(&w, p.searches, budget)
}

// compressHashChain is LZ4HC_compress_hashChain.
func (h *hcState) compressHashChain(w *seqWriter, maxAttempts int, budget *int64) ([]byte, int, bool) {
	src := h.src
	patternAnalysis := maxAttempts > 128
	iend := len(src)
	mflimit := iend - mfLimit
	matchlimit := iend - lastLiterals
	var ml, ref int
	fail := func() ([]byte, int, bool) {
		if !w.overflow(ml, ref) {
			return nil, 0, true
		}
		out, n := w.finish()
		return out, n, true
	}

	if len(src) >= minLength {
		for w.ip <= mflimit {
			if budget != nil {
				if *budget <= 0 {
					return nil, 0, false
				}
				*budget--
			}
			ip := w.ip
			ml = h.widerMatch(ip, ip, matchlimit, minMatch-1, &ref, new(int), maxAttempts, patternAnalysis, false)
			if ml < minMatch {
				w.ip++
				continue
			}
			start0, ref0, ml0 := ip, ref, ml
			var ml2, start2, ref2, ml3, start3, ref3 int
		search2:
			if ip+ml <= mflimit {
				ml2 = h.widerMatch(ip+ml-2, ip, matchlimit, ml, &ref2, &start2, maxAttempts, patternAnalysis, false)
			} else {
				ml2 = ml
			}
			if ml2 == ml {
				w.ip = ip
				if !w.put(ml, ref) {
					return fail()
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
				ml3 = h.widerMatch(start2+ml2-3, start2, matchlimit, ml2, &ref3, &start3, maxAttempts, patternAnalysis, false)
			} else {
				ml3 = ml2
			}
			if ml3 == ml2 {
				if start2 < ip+ml {
					ml = start2 - ip
				}
				w.ip = ip
				if !w.put(ml, ref) {
					return fail()
				}
				w.ip = start2
				if !w.put(ml2, ref2) {
					ml, ref = ml2, ref2
					return fail()
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
					w.ip = ip
					if !w.put(ml, ref) {
						return fail()
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
			w.ip = ip
			if !w.put(ml, ref) {
				return fail()
			}
			ip, ref, ml = start2, ref2, ml2
			start2, ref2, ml2 = start3, ref3, ml3
			goto search3
		}
	}
	out, n := w.finish()
	return out, n, true
}
