package liblz4

// The optimal parser of LZ4HC levels 10…12 (LZ4HC_compress_optimal of
// liblz4 1.9.4, favouring compression ratio, no dictionary). From each
// position with a match it prices, byte by byte up to the end of the
// longest match seen, the cheapest way (in output bytes) to reach every
// position with literals and matches, then walks the cheapest path back and
// encodes it.

const (
	optNum       = 1 << 12 // LZ4_OPT_NUM: the window a parse prices
	trailingLits = 3       // positions priced as literals past the last match
)

// optCell is one LZ4HC_optimal_t: the cheapest known way to reach a
// position, ending in a literal (mlen 1) or a match of mlen bytes at off.
type optCell struct {
	price, off, mlen, litlen int32
}

// literalsPrice is LZ4HC_literalsPrice: the output bytes of litlen literals
// and their length bytes beyond the token.
func literalsPrice(litlen int) int {
	price := litlen
	if litlen >= runMask {
		price += 1 + (litlen-runMask)/255
	}
	return price
}

// sequencePrice is LZ4HC_sequencePrice: token, offset, literals and the
// match length bytes of a sequence.
func sequencePrice(litlen, mlen int) int {
	price := 1 + 2 + literalsPrice(litlen)
	if mlen >= mlMask+minMatch {
		price += 1 + (mlen-(mlMask+minMatch))/255
	}
	return price
}

// findLongerMatch is LZ4HC_FindLongerMatch: the longest match at ip longer
// than minLen (length 0 when none), with pattern analysis and chain swap.
func (h *hcState) findLongerMatch(ip, iHighLimit, minLen, searches int) (length, off int) {
	var ref, start int
	ml := h.widerMatch(ip, ip, iHighLimit, minLen, &ref, &start, searches, true, true)
	if ml <= minLen {
		return 0, 0
	}
	return ml, ip - ref
}

// compressOptimal is LZ4HC_compress_optimal. sufficient is the length of a
// match encoded at once; fullUpdate (level 12) searches at every position
// whose price might still improve and for any match length.
func (h *hcState) compressOptimal(w *seqWriter, searches, sufficient int, fullUpdate bool, budget *int64) ([]byte, int, bool) {
	if h.opt == nil {
		h.opt = new([optNum + trailingLits]optCell)
	}
	opt := h.opt
	iend := len(h.src)
	mflimit := iend - mfLimit
	matchlimit := iend - lastLiterals
	sufficient = min(sufficient, optNum-1)
	search := func(p, minLen int) (int, int, bool) {
		if budget != nil {
			if *budget <= 0 {
				return 0, 0, false
			}
			*budget--
		}
		l, o := h.findLongerMatch(p, matchlimit, minLen, searches)
		return l, o, true
	}
	// setLit prices position pos as the litlen-th literal after a cheaper
	// position.
	setLit := func(pos, litlen, price int) {
		opt[pos] = optCell{price: int32(price), off: 0, mlen: 1, litlen: int32(litlen)}
	}
	trailing := func(last int) {
		for add := 1; add <= trailingLits; add++ {
			setLit(last+add, add, int(opt[last].price)+literalsPrice(add))
		}
	}
	fail := func(ml, ref int) ([]byte, int, bool) {
		if !w.overflow(ml, ref) {
			return nil, 0, true
		}
		out, n := w.finish()
		return out, n, true
	}

	for w.ip <= mflimit {
		ip := w.ip
		llen := ip - w.anchor
		firstLen, firstOff, ok := search(ip, minMatch-1)
		if !ok {
			return nil, 0, false
		}
		if firstLen == 0 {
			w.ip++
			continue
		}
		if firstLen > sufficient {
			// good enough: encode it at once
			if !w.put(firstLen, ip-firstOff) {
				return fail(firstLen, ip-firstOff)
			}
			continue
		}

		// Price the first positions as literals, then those the first
		// match reaches.
		for r := range minMatch {
			setLit(r, llen+r, literalsPrice(llen+r))
		}
		for ml := minMatch; ml <= firstLen; ml++ {
			opt[ml] = optCell{price: int32(sequencePrice(llen, ml)), off: int32(firstOff), mlen: int32(ml), litlen: int32(llen)}
		}
		last := firstLen
		trailing(last)

		var bestLen, bestOff, cur int
		encodeAt := false
		for cur = 1; cur < last; cur++ {
			p := ip + cur
			if p > mflimit {
				break
			}
			// Not worth searching where the next position costs no more
			// (unless, at level 12, prices rise sharply soon after).
			if opt[cur+1].price <= opt[cur].price &&
				(!fullUpdate || opt[cur+minMatch].price < opt[cur].price+3) {
				continue
			}
			minLen := minMatch - 1
			if !fullUpdate {
				minLen = last - cur // only matches reaching past the end
			}
			nl, no, ok := search(p, minLen)
			if !ok {
				return nil, 0, false
			}
			if nl == 0 {
				continue
			}
			if nl > sufficient || nl+cur >= optNum {
				bestLen, bestOff = nl, no
				last = cur + 1
				encodeAt = true
				break
			}
			// literals after the position
			baseLit := int(opt[cur].litlen)
			for lit := 1; lit < minMatch; lit++ {
				price := int(opt[cur].price) - literalsPrice(baseLit) + literalsPrice(baseLit+lit)
				if price < int(opt[cur+lit].price) {
					setLit(cur+lit, baseLit+lit, price)
				}
			}
			// the match at the position, every length
			for ml := minMatch; ml <= nl; ml++ {
				pos := cur + ml
				var price, ll int
				if opt[cur].mlen == 1 {
					ll = int(opt[cur].litlen)
					if cur > ll {
						price = int(opt[cur-ll].price)
					}
					price += sequencePrice(ll, ml)
				} else {
					price = int(opt[cur].price) + sequencePrice(0, ml)
				}
				if pos > last+trailingLits || price <= int(opt[pos].price) {
					if ml == nl && last < pos {
						last = pos
					}
					opt[pos] = optCell{price: int32(price), off: int32(no), mlen: int32(ml), litlen: int32(ll)}
				}
			}
			trailing(last)
		}
		if !encodeAt {
			bestLen, bestOff = int(opt[last].mlen), int(opt[last].off)
			cur = last - bestLen
		}

		// Walk the cheapest path back from cur, leaving at each step's
		// start the step that follows it.
		pos, selLen, selOff := cur, bestLen, bestOff
		for {
			nextLen, nextOff := int(opt[pos].mlen), int(opt[pos].off)
			opt[pos].mlen, opt[pos].off = int32(selLen), int32(selOff)
			selLen, selOff = nextLen, nextOff
			if nextLen > pos {
				break
			}
			pos -= nextLen
		}

		// Encode the path.
		for r := 0; r < last; {
			ml, off := int(opt[r].mlen), int(opt[r].off)
			if ml == 1 {
				w.ip++
				r++
				continue
			}
			r += ml
			if !w.put(ml, w.ip-off) {
				return fail(ml, w.ip-off)
			}
		}
	}
	out, n := w.finish()
	return out, n, true
}
