package puffin

import "encoding/binary"

// bitReader reads deflate bits (least significant bit first) from data.
// Bits past the end of data read as zero; callers compare pos with end after
// each item, so a truncated stream is noticed before anything is emitted.
type bitReader struct {
	data []byte
	pos  uint64 // next bit
	end  uint64 // len(data)*8
}

func newBitReader(data []byte, pos uint64) *bitReader {
	return &bitReader{data: data, pos: pos, end: uint64(len(data)) * 8}
}

// peek returns at least 56 bits starting at pos.
func (r *bitReader) peek() uint64 {
	i := r.pos >> 3
	var v uint64
	if i+8 <= uint64(len(r.data)) {
		v = binary.LittleEndian.Uint64(r.data[i:])
	} else {
		for k := uint64(0); k < 8 && i+k < uint64(len(r.data)); k++ {
			v |= uint64(r.data[i+k]) << (8 * k)
		}
	}
	return v >> (r.pos & 7)
}

// bits reads n ≤ 32 bits.
func (r *bitReader) bits(n uint) uint32 {
	if n == 0 {
		return 0
	}
	v := uint32(r.peek() & (1<<n - 1))
	r.pos += uint64(n)
	return v
}

func (r *bitReader) left() uint64 {
	if r.pos >= r.end {
		return 0
	}
	return r.end - r.pos
}

// bitWriter ORs deflate bits into out, which must read as zero where bits go,
// starting at bit pos and never at or past byte limit.
type bitWriter struct {
	out   []byte
	idx   int    // byte receiving the next flushed byte
	acc   uint64 // pending bits
	nacc  uint   // number of pending bits
	limit int
	over  bool // a write went past limit
}

func newBitWriter(out []byte, pos uint64, limit int) *bitWriter {
	return &bitWriter{out: out, idx: int(pos >> 3), nacc: uint(pos & 7), limit: limit}
}

func (w *bitWriter) bits(n uint, v uint32) {
	w.acc |= uint64(v&(1<<n-1)) << w.nacc
	w.nacc += n
	for w.nacc >= 8 {
		if w.idx >= w.limit {
			w.over = true
			return
		}
		w.out[w.idx] |= byte(w.acc)
		w.idx++
		w.acc >>= 8
		w.nacc -= 8
	}
}

// bytes writes whole bytes; the writer must be byte aligned.
func (w *bitWriter) bytes(b []byte) {
	if w.idx+len(b) > w.limit {
		w.over = true
		return
	}
	copy(w.out[w.idx:], b)
	w.idx += len(b)
}

func (w *bitWriter) pos() uint64 { return uint64(w.idx)*8 + uint64(w.nacc) }

// flush writes the last partial byte.
func (w *bitWriter) flush() {
	if w.nacc > 0 {
		if w.idx >= w.limit {
			w.over = true
			return
		}
		w.out[w.idx] |= byte(w.acc) & byte(1<<w.nacc-1)
		// keep idx/nacc: pos() stays exact
	}
}
