package puffin

import "fmt"

// PuffError reports where in a puff stream a problem is.
type PuffError struct {
	Off int // byte offset in the puff stream
	Msg string
}

func (e *PuffError) Error() string {
	return fmt.Sprintf("puffin: puff stream at byte %d: %s", e.Off, e.Msg)
}

func (e *PuffError) Unwrap() error { return ErrCorrupt }

func puffErr(off int, format string, args ...any) error {
	return &PuffError{Off: off, Msg: fmt.Sprintf(format, args...)}
}

// huffer holds the dynamic tables reused across blocks.
type huffer struct {
	lit, dist, cl huffman
	lens          [320]uint8
}

// huff writes the deflate bits of puff stream b through w.
func (h *huffer) huff(b []byte, w *bitWriter) error {
	i := 0
	for i < len(b) {
		// block metadata
		if len(b)-i < 2 {
			return puffErr(i, "truncated block metadata length")
		}
		n := int(b[i])<<8 | int(b[i+1]) + 1
		if len(b)-i-2 < n {
			return puffErr(i, "block metadata of %d bytes is truncated", n)
		}
		m := b[i+2 : i+2+n]
		mOff := i + 2
		i += 2 + n
		final, typ := m[0]>>7, (m[0]>>5)&3
		w.bits(1, uint32(final))
		w.bits(2, uint32(typ))
		var lit, dist *huffman
		switch typ {
		case 0:
			if n != 1 {
				return puffErr(mOff, "stored block metadata of %d bytes", n)
			}
			pad := uint((8 - w.pos()&7) & 7)
			w.bits(pad, uint32(m[0]&0x1F))
			if i >= len(b) {
				return puffErr(i, "stored block ends without end of block")
			}
			if b[i] < 0x80 {
				at := i
				run, err := literalRun(b, &i)
				if err != nil {
					return err
				}
				if len(run) > 0xFFFF {
					return puffErr(at, "stored block of %d bytes", len(run))
				}
				w.bits(16, uint32(len(run)))
				w.bits(16, ^uint32(len(run)))
				w.bytes(run)
			} else {
				w.bits(16, 0)
				w.bits(16, 0xFFFF)
			}
			if len(b)-i < 2 || b[i] != 0xFF || b[i+1] != 0x81 {
				return puffErr(i, "stored block does not end with end of block")
			}
			i += 2
			continue
		case 1:
			if n != 1 {
				return puffErr(mOff, "fixed block metadata of %d bytes", n)
			}
			lit, dist = &fixedLit, &fixedDist
		case 2:
			if err := h.dynamicHeader(m, mOff, w); err != nil {
				return err
			}
			lit, dist = &h.lit, &h.dist
		default:
			return puffErr(mOff, "block type 3")
		}
		for {
			if i >= len(b) {
				return puffErr(i, "block ends without end of block")
			}
			at := i
			c := b[i]
			if c < 0x80 {
				run, err := literalRun(b, &i)
				if err != nil {
					return err
				}
				for _, x := range run {
					if !lit.write(w, int(x)) {
						return puffErr(at, "literal %#x has no code in this block", x)
					}
				}
				continue
			}
			var length int
			if c == 0xFF {
				if len(b)-i < 2 {
					return puffErr(i, "truncated length")
				}
				k := b[i+1]
				if k == 129 {
					i += 2
					if !lit.write(w, 256) {
						return puffErr(at, "end of block has no code in this block")
					}
					break
				}
				if k > 128 {
					return puffErr(i, "length byte %d", k)
				}
				length = int(k) + 130
				i += 2
			} else {
				length = int(c&0x7F) + 3
				i++
			}
			if len(b)-i < 2 {
				return puffErr(at, "truncated distance")
			}
			d := int(b[i])<<8 | int(b[i+1]) + 1
			i += 2
			if d > 32768 {
				return puffErr(at, "distance %d", d)
			}
			lc := lengthCode[length]
			if !lit.write(w, 257+int(lc)) {
				return puffErr(at, "length %d has no code in this block", length)
			}
			w.bits(uint(lengthExtra[lc]), uint32(length-int(lengthBase[lc])))
			dc := distCode[d]
			if !dist.write(w, int(dc)) {
				return puffErr(at, "distance %d has no code in this block", d)
			}
			w.bits(uint(distExtra[dc]), uint32(d-int(distBase[dc])))
		}
		if w.over {
			return puffErr(i, "deflate output overruns its extent")
		}
	}
	if w.over {
		return puffErr(i, "deflate output overruns its extent")
	}
	return nil
}

// literalRun decodes the literal run at b[*i].
func literalRun(b []byte, i *int) ([]byte, error) {
	at := *i
	n := int(b[at]) + 1
	hdr := 1
	if b[at] == 0x7F {
		if len(b)-at < 3 {
			return nil, puffErr(at, "truncated literal run length")
		}
		n = int(b[at+1])<<8 | int(b[at+2]) + 128
		hdr = 3
	}
	if len(b)-at-hdr < n {
		return nil, puffErr(at, "literal run of %d bytes is truncated", n)
	}
	*i = at + hdr + n
	return b[at+hdr : at+hdr+n], nil
}

// dynamicHeader writes the dynamic header described by metadata m (m[0] is
// the block header byte) and builds h.lit and h.dist.
func (h *huffer) dynamicHeader(m []byte, off int, w *bitWriter) error {
	if len(m) < 4 {
		return puffErr(off, "dynamic block metadata of %d bytes", len(m))
	}
	hlit, hdist, hclen := m[1], m[2], m[3]
	if hlit > 29 || hdist > 29 || hclen > 15 {
		return puffErr(off, "dynamic header counts %d/%d/%d", hlit, hdist, hclen)
	}
	nlit, ndist, ncl := int(hlit)+257, int(hdist)+1, int(hclen)+4
	w.bits(5, uint32(hlit))
	w.bits(5, uint32(hdist))
	w.bits(4, uint32(hclen))
	k := 4
	if len(m) < k+(ncl+1)/2 {
		return puffErr(off, "truncated code-length code lengths")
	}
	var cl [19]uint8
	for i := range ncl {
		v := m[k+i/2]
		if i%2 == 0 {
			v >>= 4
		}
		v &= 0x0F
		if v > 7 {
			return puffErr(off+k+i/2, "code-length code length %d", v)
		}
		cl[clOrder[i]] = v
		w.bits(3, uint32(v))
	}
	k += (ncl + 1) / 2
	if !h.cl.build(cl[:]) {
		return puffErr(off, "over-subscribed code-length code")
	}
	total := nlit + ndist
	for i := 0; i < total; {
		if k >= len(m) {
			return puffErr(off+k, "dynamic metadata ends after %d of %d code lengths", i, total)
		}
		pc := m[k]
		k++
		var sym, rep int
		var val uint8
		switch {
		case pc < 16:
			sym = int(pc)
		case pc < 20:
			sym, rep = 16, 3+int(pc-16)
			if i == 0 {
				return puffErr(off+k-1, "repeat of a code length before the first one")
			}
			val = h.lens[i-1]
		case pc < 28:
			sym, rep = 17, 3+int(pc-20)
		case pc <= 155:
			sym, rep = 18, 11+int(pc-28)
		default:
			return puffErr(off+k-1, "code-length symbol byte %d", pc)
		}
		if !h.cl.write(w, sym) {
			return puffErr(off+k-1, "code-length symbol %d has no code", sym)
		}
		switch sym {
		case 16:
			w.bits(2, uint32(pc-16))
		case 17:
			w.bits(3, uint32(pc-20))
		case 18:
			w.bits(7, uint32(pc-28))
		default:
			h.lens[i] = pc
			i++
			continue
		}
		if i+rep > total {
			return puffErr(off+k-1, "code-length repeat runs past the %d lengths", total)
		}
		for j := 0; j < rep; j++ {
			h.lens[i+j] = val
		}
		i += rep
	}
	if k != len(m) {
		return puffErr(off+k, "%d bytes of dynamic metadata left over", len(m)-k)
	}
	if !h.lit.build(h.lens[:nlit]) || !h.dist.build(h.lens[nlit:total]) {
		return puffErr(off, "over-subscribed code lengths")
	}
	return nil
}

// Huff returns the deflate bits of puff stream b, starting at bit offset
// start (0…7) of the first byte, and the bit offset where they end.
func Huff(puff []byte, start uint) ([]byte, uint64, error) {
	// A puff never expands into more than 2 bytes of deflate per byte plus
	// a few bytes of header.
	out := make([]byte, 2*len(puff)+8)
	w := newBitWriter(out, uint64(start&7), len(out))
	var h huffer
	if err := h.huff(puff, w); err != nil {
		return nil, 0, err
	}
	w.flush()
	end := w.pos()
	return out[:(end+7)/8], end, nil
}
