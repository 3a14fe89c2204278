package puffin

import "fmt"

// BitExtent is a range of bits (a deflate extent) in a file.
type BitExtent struct{ Offset, Length uint64 }

// ByteExtent is a range of bytes (a puff extent) in a puffed stream.
type ByteExtent struct{ Offset, Length uint64 }

func (e BitExtent) end() uint64  { return e.Offset + e.Length }
func (e ByteExtent) end() uint64 { return e.Offset + e.Length }

// The puffed view maps every bit range between deflates, [a, b), to one
// byte per data byte it touches, holding that byte's bits of the range moved
// down to bit 0 (AOSP's PuffinStream masks off the bits of the deflate that
// starts in the byte and shifts out those of the deflate that ended in it).
// A deflate that starts exactly where the previous one ended touches no gap
// byte. The bytes after the last deflate map the same way up to the end of
// the file, so the file is floor(end of last deflate / 8) + (puffed size −
// end of last puff) bytes long.

// gapBytes is the number of puffed bytes of the bit range [a, b).
func gapBytes(a, b uint64) uint64 {
	if a >= b {
		return 0
	}
	return (b+7)/8 - a/8
}

// appendGap appends the puffed bytes of data's bit range [a, b).
func appendGap(dst, data []byte, a, b uint64) []byte {
	for a < b && a&7 != 0 {
		next := min((a|7)+1, b)
		dst = append(dst, (data[a/8]>>(a&7))&byte(1<<(next-a)-1))
		a = next
	}
	if a >= b {
		return dst
	}
	full := b / 8
	dst = append(dst, data[a/8:full]...)
	if b&7 != 0 {
		dst = append(dst, data[full]&byte(1<<(b&7)-1))
	}
	return dst
}

// putGap ORs the puffed bytes g of the bit range [a, b) into out (zeroed).
func putGap(out, g []byte, a, b uint64) {
	k := 0
	for a < b && a&7 != 0 {
		next := min((a|7)+1, b)
		out[a/8] |= (g[k] & byte(1<<(next-a)-1)) << (a & 7)
		k++
		a = next
	}
	if a >= b {
		return
	}
	full := b / 8
	k += copy(out[a/8:full], g[k:])
	if b&7 != 0 {
		out[full] |= g[k] & byte(1<<(b&7)-1)
	}
}

// checkDeflates checks that deflates are sorted, do not overlap and end by
// limit bits.
func checkDeflates(deflates []BitExtent, limit uint64) error {
	var prev uint64
	for i, d := range deflates {
		if d.Offset < prev || d.end() < d.Offset || d.end() > limit {
			return fmt.Errorf("puffin: deflate %d (bits %d+%d) overlaps its predecessor or passes the %d-bit data: %w", i, d.Offset, d.Length, limit, ErrCorrupt)
		}
		prev = d.end()
	}
	return nil
}

// PuffStream returns the puffed view of data with the given deflate extents
// and the puff extents, laid out as AOSP's FindPuffLocations does.
func PuffStream(data []byte, deflates []BitExtent) ([]byte, []ByteExtent, error) {
	return puffStream(data, deflates, nil, 0)
}

// puffStream builds the puffed view; when want is non-nil the puffs must come
// out exactly as want and the whole view as wantSize bytes, checked as it
// grows so a lying header cannot make it allocate more than the real work.
func puffStream(data []byte, deflates []BitExtent, want []ByteExtent, wantSize uint64) ([]byte, []ByteExtent, error) {
	if err := checkDeflates(deflates, uint64(len(data))*8); err != nil {
		return nil, nil, err
	}
	if want != nil && len(want) != len(deflates) {
		return nil, nil, fmt.Errorf("puffin: %d puff extents for %d deflates: %w", len(want), len(deflates), ErrCorrupt)
	}
	var p puffer
	w := &puffWriter{}
	puffs := make([]ByteExtent, 0, len(deflates))
	var cur uint64
	for i, d := range deflates {
		w.out = appendGap(w.out, data, cur, d.Offset)
		off := uint64(len(w.out))
		end, err := p.extent(data[:(d.end()+7)/8], d.Offset, w)
		if err != nil {
			return nil, nil, fmt.Errorf("deflate %d (bits %d+%d): %w", i, d.Offset, d.Length, err)
		}
		if (end+7)/8 != (d.end()+7)/8 || end > d.end() {
			return nil, nil, fmt.Errorf("puffin: deflate %d (bits %d+%d) ends at bit %d: %w", i, d.Offset, d.Length, end, ErrCorrupt)
		}
		pe := ByteExtent{off, uint64(len(w.out)) - off}
		if want != nil && pe != want[i] {
			return nil, nil, fmt.Errorf("puffin: deflate %d puffs to bytes %d+%d, the patch says %d+%d: %w", i, pe.Offset, pe.Length, want[i].Offset, want[i].Length, ErrCorrupt)
		}
		if want != nil && uint64(len(w.out)) > wantSize {
			return nil, nil, fmt.Errorf("puffin: puffed source exceeds the patch's %d bytes: %w", wantSize, ErrCorrupt)
		}
		puffs = append(puffs, pe)
		cur = d.end()
	}
	w.out = appendGap(w.out, data, cur, uint64(len(data))*8)
	if want != nil && uint64(len(w.out)) != wantSize {
		return nil, nil, fmt.Errorf("puffin: puffed source is %d bytes, the patch says %d: %w", len(w.out), wantSize, ErrCorrupt)
	}
	return w.out, puffs, nil
}

// HuffedSize is the size of the file whose puffed view is puffSize bytes with
// the given extents.
func HuffedSize(deflates []BitExtent, puffs []ByteExtent, puffSize uint64) (uint64, error) {
	if len(deflates) != len(puffs) {
		return 0, fmt.Errorf("puffin: %d puff extents for %d deflates: %w", len(puffs), len(deflates), ErrCorrupt)
	}
	if len(puffs) == 0 {
		return puffSize, nil
	}
	last := puffs[len(puffs)-1]
	if last.end() < last.Offset || last.end() > puffSize {
		return 0, fmt.Errorf("puffin: last puff (bytes %d+%d) passes the %d-byte puffed stream: %w", last.Offset, last.Length, puffSize, ErrCorrupt)
	}
	return deflates[len(deflates)-1].end()/8 + puffSize - last.end(), nil
}

// HuffStream rebuilds the file from its puffed view (the inverse of
// PuffStream). The extents must be laid out as PuffStream lays them out.
func HuffStream(puffed []byte, deflates []BitExtent, puffs []ByteExtent) ([]byte, error) {
	size, err := HuffedSize(deflates, puffs, uint64(len(puffed)))
	if err != nil {
		return nil, err
	}
	// Each puff byte huffs into at most 2 deflate bytes (plus a partial byte
	// per deflate); gap bytes map 1:1. Bound the allocation by that.
	if size > 2*uint64(len(puffed))+8*uint64(len(deflates))+8 {
		return nil, fmt.Errorf("puffin: %d-byte file from a %d-byte puffed stream: %w", size, len(puffed), ErrCorrupt)
	}
	if err := checkLayout(deflates, puffs, uint64(len(puffed)), size); err != nil {
		return nil, err
	}
	out := make([]byte, size)
	var h huffer
	var cur, pp uint64
	for i, d := range deflates {
		p := puffs[i]
		putGap(out, puffed[pp:p.Offset], cur, d.Offset)
		limit := int((d.end() + 7) / 8)
		w := newBitWriter(out, d.Offset, limit)
		if err := h.huff(puffed[p.Offset:p.end()], w); err != nil {
			return nil, fmt.Errorf("deflate %d (puff bytes %d+%d): %w", i, p.Offset, p.Length, err)
		}
		w.flush()
		if end := w.pos(); w.over || (end+7)/8 != (d.end()+7)/8 || end > d.end() {
			return nil, fmt.Errorf("puffin: puff %d huffs to bits %d…%d, the patch says %d+%d: %w", i, d.Offset, end, d.Offset, d.Length, ErrCorrupt)
		}
		cur, pp = d.end(), p.end()
	}
	putGap(out, puffed[pp:], cur, size*8)
	return out, nil
}

// checkLayout checks that the extents are laid out as PuffStream lays them
// out in a puffed stream of puffSize bytes and a file of size bytes.
func checkLayout(deflates []BitExtent, puffs []ByteExtent, puffSize, size uint64) error {
	if err := checkDeflates(deflates, size*8); err != nil {
		return err
	}
	var cur, pp uint64
	for i, d := range deflates {
		p := puffs[i]
		if p.Offset < pp || p.end() < p.Offset || p.end() > puffSize || p.Offset-pp != gapBytes(cur, d.Offset) {
			return fmt.Errorf("puffin: puff %d (bytes %d+%d) does not match deflate %d (bits %d+%d): %w", i, p.Offset, p.Length, i, d.Offset, d.Length, ErrCorrupt)
		}
		cur, pp = d.end(), p.end()
	}
	if puffSize-pp != gapBytes(cur, size*8) {
		return fmt.Errorf("puffin: %d bytes after the last puff do not match the %d-byte file: %w", puffSize-pp, size, ErrCorrupt)
	}
	return nil
}
