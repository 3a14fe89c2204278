// Package bz2 is a small bzip2 compressor. The standard library only decodes
// bzip2, but update_engine needs to produce it: REPLACE_BZ operations, BSDIFF40
// patches and the bzip2 streams of BSDF2 patches all carry bzip2 data.
//
// The output is a standard bzip2 stream ("BZh" + level, blocks of at most
// level×100 kB of run-length-encoded input, stream CRC) that compress/bzip2
// and the bzip2(1) tool decode. The encoder favours simplicity over the last
// percent of ratio: one Huffman code set per 50-symbol group is chosen among up
// to six tables built with a few refinement passes, as bzip2 itself does.
// Output is fully deterministic.
package bz2

import (
	"bytes"
	"errors"
	"index/suffixarray"
	"sort"
)

// Compress returns data as a bzip2 stream with blocks of level×100 kB
// (level 1…9; 0 means 9).
func Compress(data []byte, level int) ([]byte, error) {
	if level == 0 {
		level = 9
	}
	if level < 1 || level > 9 {
		return nil, errors.New("bz2: level must be 1…9")
	}
	var w bitWriter
	w.out = make([]byte, 0, len(data)/4+64)
	w.bytes([]byte{'B', 'Z', 'h', byte('0' + level)})
	maxBlock := level*100000 - 19
	var combined uint32
	for len(data) > 0 {
		rle, used := rle1(data, maxBlock)
		crc := blockCRC(data[:used])
		combined = (combined<<1 | combined>>31) ^ crc
		writeBlock(&w, rle, crc)
		data = data[used:]
	}
	w.bits(48, 0x177245385090)
	w.bits(32, uint64(combined))
	w.flush()
	return w.out, nil
}

// rle1 applies bzip2's initial run-length encoding (runs of 4…255 equal bytes
// become the 4 bytes plus a count byte) to a prefix of data whose encoding
// fits in max bytes. It returns the encoding and the input bytes consumed.
func rle1(data []byte, max int) ([]byte, int) {
	out := make([]byte, 0, min(len(data), max)+8)
	i := 0
	for i < len(data) {
		b := data[i]
		run := 1
		for i+run < len(data) && run < 255+4 && data[i+run] == b {
			run++
		}
		need := run
		if run >= 4 {
			need = 5
		}
		if len(out)+need > max {
			if run < 4 {
				// Emit what fits of a short run.
				n := max - len(out)
				if n <= 0 {
					break
				}
				// A partial run of <4 bytes stays a literal run.
				for k := 0; k < n; k++ {
					out = append(out, b)
				}
				i += n
			}
			break
		}
		if run >= 4 {
			out = append(out, b, b, b, b, byte(run-4))
		} else {
			for k := 0; k < run; k++ {
				out = append(out, b)
			}
		}
		i += run
	}
	return out, i
}

var crcTable = func() (t [256]uint32) {
	for i := range t {
		c := uint32(i) << 24
		for k := 0; k < 8; k++ {
			if c&0x80000000 != 0 {
				c = c<<1 ^ 0x04c11db7
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

// blockCRC is bzip2's CRC-32 (non-reflected polynomial 0x04c11db7).
func blockCRC(b []byte) uint32 {
	c := ^uint32(0)
	for _, x := range b {
		c = c<<8 ^ crcTable[byte(c>>24)^x]
	}
	return ^c
}

// bwt returns the last column of the sorted cyclic rotations of s and the
// row holding s itself. Rotations are sorted through the suffix array of s+s.
func bwt(s []byte) ([]byte, int) {
	n := len(s)
	ss := make([]byte, 2*n)
	copy(ss, s)
	copy(ss[n:], s)
	sa := SuffixArray(ss)
	last := make([]byte, 0, n)
	orig := -1
	for _, p32 := range sa {
		p := int(p32)
		if p >= n {
			continue
		}
		if p == 0 {
			orig = len(last)
			last = append(last, s[n-1])
		} else {
			last = append(last, s[p-1])
		}
	}
	return last, orig
}

// SuffixArray returns the suffix array of data, built by index/suffixarray
// (SA-IS) and read back from the index's serialized form, which is the only
// way the standard library exposes it.
func SuffixArray(data []byte) []int32 {
	idx := suffixarray.New(data)
	var buf bytes.Buffer
	buf.Grow(len(data) + 5*len(data) + 64)
	if err := idx.Write(&buf); err != nil {
		panic("bz2: suffixarray serialization into memory failed: " + err.Error())
	}
	b := buf.Bytes()
	// Layout (index/suffixarray Write): 10-byte varint length, the data,
	// then chunks each starting with a 10-byte varint chunk size (including
	// those 10 bytes) followed by uvarint entries.
	const hdr = 10
	b = b[hdr+len(data):]
	sa := make([]int32, 0, len(data))
	for len(b) > 0 {
		size, _ := varint(b[:hdr])
		chunk := b[hdr:size]
		for len(chunk) > 0 {
			v, w := uvarint(chunk)
			sa = append(sa, int32(v))
			chunk = chunk[w:]
		}
		b = b[size:]
	}
	if len(sa) != len(data) {
		panic("bz2: unexpected index/suffixarray serialization")
	}
	return sa
}

func uvarint(b []byte) (uint64, int) {
	var x uint64
	var s uint
	for i, c := range b {
		if c < 0x80 {
			return x | uint64(c)<<s, i + 1
		}
		x |= uint64(c&0x7f) << s
		s += 7
	}
	return 0, len(b)
}

func varint(b []byte) (int64, int) {
	ux, n := uvarint(b)
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x, n
}

const (
	groupSize  = 50
	maxCodeLen = 17
	runA       = 0
	runB       = 1
)

func writeBlock(w *bitWriter, block []byte, crc uint32) {
	last, orig := bwt(block)

	var inUse [256]bool
	for _, b := range block {
		inUse[b] = true
	}
	var unseqToSeq [256]byte
	nInUse := 0
	for i := 0; i < 256; i++ {
		if inUse[i] {
			unseqToSeq[i] = byte(nInUse)
			nInUse++
		}
	}
	alpha := nInUse + 2
	eob := uint16(nInUse + 1)

	// Move-to-front, then zero-run encoding with RUNA/RUNB.
	syms := make([]uint16, 0, len(last)+1)
	var mtf [256]byte
	for i := range mtf {
		mtf[i] = byte(i)
	}
	zrun := 0
	flushRun := func() {
		if zrun == 0 {
			return
		}
		z := zrun - 1
		for {
			if z&1 != 0 {
				syms = append(syms, runB)
			} else {
				syms = append(syms, runA)
			}
			if z < 2 {
				break
			}
			z = (z - 2) / 2
		}
		zrun = 0
	}
	for _, b := range last {
		v := unseqToSeq[b]
		if mtf[0] == v {
			zrun++
			continue
		}
		flushRun()
		j := 1
		for mtf[j] != v {
			j++
		}
		copy(mtf[1:j+1], mtf[:j])
		mtf[0] = v
		syms = append(syms, uint16(j+1))
	}
	flushRun()
	syms = append(syms, eob)

	nGroups := 6
	switch {
	case len(syms) < 200:
		nGroups = 2
	case len(syms) < 600:
		nGroups = 3
	case len(syms) < 1200:
		nGroups = 4
	case len(syms) < 2400:
		nGroups = 5
	}
	nSel := (len(syms) + groupSize - 1) / groupSize
	lens, sel := buildTables(syms, alpha, nGroups, nSel)

	w.bits(48, 0x314159265359)
	w.bits(32, uint64(crc))
	w.bits(1, 0) // not randomised
	w.bits(24, uint64(orig))
	var used16 uint64
	for i := 0; i < 16; i++ {
		for j := 0; j < 16; j++ {
			if inUse[i*16+j] {
				used16 |= 1 << (15 - i)
				break
			}
		}
	}
	w.bits(16, used16)
	for i := 0; i < 16; i++ {
		if used16&(1<<(15-i)) == 0 {
			continue
		}
		var m uint64
		for j := 0; j < 16; j++ {
			if inUse[i*16+j] {
				m |= 1 << (15 - j)
			}
		}
		w.bits(16, m)
	}
	w.bits(3, uint64(nGroups))
	w.bits(15, uint64(nSel))
	// Selectors, move-to-front coded and written in unary.
	order := make([]byte, nGroups)
	for i := range order {
		order[i] = byte(i)
	}
	for _, s := range sel {
		j := 0
		for order[j] != s {
			j++
		}
		copy(order[1:j+1], order[:j])
		order[0] = s
		for k := 0; k < j; k++ {
			w.bits(1, 1)
		}
		w.bits(1, 0)
	}
	// Code lengths, delta coded.
	codes := make([][]uint32, nGroups)
	for g := 0; g < nGroups; g++ {
		cur := int(lens[g][0])
		w.bits(5, uint64(cur))
		for s := 0; s < alpha; s++ {
			l := int(lens[g][s])
			for cur < l {
				w.bits(2, 2)
				cur++
			}
			for cur > l {
				w.bits(2, 3)
				cur--
			}
			w.bits(1, 0)
		}
		codes[g] = canonicalCodes(lens[g])
	}
	for i, s := range syms {
		g := sel[i/groupSize]
		w.bits(uint(lens[g][s]), uint64(codes[g][s]))
	}
}

// canonicalCodes assigns codes in order of length, then symbol, which is the
// assignment bzip2 decoders reconstruct.
func canonicalCodes(lens []uint8) []uint32 {
	codes := make([]uint32, len(lens))
	code := uint32(0)
	for l := uint8(1); l <= maxCodeLen; l++ {
		for s, sl := range lens {
			if sl == l {
				codes[s] = code
				code++
			}
		}
		code <<= 1
	}
	return codes
}

// buildTables picks nGroups Huffman tables and a table per 50-symbol group:
// initial tables split the symbol range by frequency, then a few passes
// reassign each group to its cheapest table and rebuild the tables.
func buildTables(syms []uint16, alpha, nGroups, nSel int) ([][]uint8, []byte) {
	total := make([]int, alpha)
	for _, s := range syms {
		total[s]++
	}
	lens := make([][]uint8, nGroups)
	// Initial partition of the alphabet into nGroups ranges of similar mass.
	remaining := len(syms)
	lo := 0
	for g := 0; g < nGroups; g++ {
		target := remaining / (nGroups - g)
		hi := lo - 1
		acc := 0
		for acc < target && hi < alpha-1 {
			hi++
			acc += total[hi]
		}
		l := make([]uint8, alpha)
		for s := 0; s < alpha; s++ {
			if s >= lo && s <= hi {
				l[s] = 0 // cheap
			} else {
				l[s] = 15 // expensive
			}
		}
		lens[g] = l
		lo = hi + 1
		remaining -= acc
	}
	sel := make([]byte, nSel)
	for iter := 0; iter < 4; iter++ {
		freq := make([][]int, nGroups)
		for g := range freq {
			freq[g] = make([]int, alpha)
		}
		for i := 0; i < nSel; i++ {
			grp := syms[i*groupSize : min(len(syms), (i+1)*groupSize)]
			best, bestCost := 0, -1
			for g := 0; g < nGroups; g++ {
				cost := 0
				for _, s := range grp {
					cost += int(lens[g][s])
				}
				if bestCost < 0 || cost < bestCost {
					best, bestCost = g, cost
				}
			}
			sel[i] = byte(best)
			for _, s := range grp {
				freq[best][s]++
			}
		}
		for g := 0; g < nGroups; g++ {
			lens[g] = huffmanLengths(freq[g], maxCodeLen)
		}
	}
	return lens, sel
}

// huffmanLengths returns code lengths (1…limit) for every symbol; symbols with
// zero frequency still get a code because bzip2 tables cover the whole
// alphabet. Frequencies are flattened until the limit holds.
func huffmanLengths(freq []int, limit int) []uint8 {
	n := len(freq)
	w := make([]int, n)
	for i, f := range freq {
		w[i] = f*256 + 1
		if f == 0 {
			w[i] = 1
		}
	}
	for {
		l := huffman(w)
		ok := true
		for _, x := range l {
			if int(x) > limit {
				ok = false
				break
			}
		}
		if ok {
			return l
		}
		for i := range w {
			w[i] = w[i]/2 + 1
		}
	}
}

// huffman computes unrestricted Huffman code lengths with the two-queue
// method over leaves sorted by (weight, symbol), which makes ties
// deterministic.
func huffman(w []int) []uint8 {
	n := len(w)
	lens := make([]uint8, n)
	if n == 1 {
		lens[0] = 1
		return lens
	}
	leaves := make([]int, n)
	for i := range leaves {
		leaves[i] = i
	}
	sort.Slice(leaves, func(a, b int) bool {
		if w[leaves[a]] != w[leaves[b]] {
			return w[leaves[a]] < w[leaves[b]]
		}
		return leaves[a] < leaves[b]
	})
	// nodes 0..n-1 are leaves, n.. internal
	weight := append(make([]int, 0, 2*n), w...)
	parent := make([]int, 2*n)
	var internal []int
	li, ii := 0, 0
	pick := func() int {
		if li < n && (ii >= len(internal) || weight[leaves[li]] <= weight[internal[ii]]) {
			li++
			return leaves[li-1]
		}
		ii++
		return internal[ii-1]
	}
	for k := 0; k < n-1; k++ {
		a, b := pick(), pick()
		p := len(weight)
		weight = append(weight, weight[a]+weight[b])
		parent[a], parent[b] = p, p
		internal = append(internal, p)
	}
	root := len(weight) - 1
	depth := make([]int, len(weight))
	for x := root - 1; x >= 0; x-- {
		depth[x] = depth[parent[x]] + 1
	}
	for i := 0; i < n; i++ {
		lens[i] = uint8(min(depth[i], 255))
	}
	return lens
}

type bitWriter struct {
	out  []byte
	acc  uint64
	nacc uint
}

func (w *bitWriter) bits(n uint, v uint64) {
	for n > 0 {
		k := min(n, 56-w.nacc)
		if k > 32 {
			k = 32
		}
		n -= k
		w.acc = w.acc<<k | (v>>n)&(1<<k-1)
		w.nacc += k
		for w.nacc >= 8 {
			w.nacc -= 8
			w.out = append(w.out, byte(w.acc>>w.nacc))
		}
	}
}

func (w *bitWriter) bytes(b []byte) {
	for _, x := range b {
		w.bits(8, uint64(x))
	}
}

func (w *bitWriter) flush() {
	if w.nacc > 0 {
		w.out = append(w.out, byte(w.acc<<(8-w.nacc)))
		w.nacc = 0
	}
	w.acc = 0
}
