package xzdec

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
)

var (
	// ErrCorrupt marks malformed xz data.
	ErrCorrupt = errors.New("xz: corrupt")
	// ErrUnsupported marks valid xz features this package does not handle.
	ErrUnsupported = errors.New("xz: unsupported")
)

// MaxDict is the largest LZMA2 dictionary accepted (xz-embedded's limit in
// update_engine).
const MaxDict = 64 << 20

var (
	headerMagic = []byte{0xFD, '7', 'z', 'X', 'Z', 0x00}
	footerMagic = []byte{'Y', 'Z'}
	crc64Table  = crc64.MakeTable(crc64.ECMA)
)

// Error is a corruption at a byte offset of the xz data.
type Error struct {
	Off int64
	Msg string
	Err error // ErrCorrupt or ErrUnsupported
}

func (e *Error) Error() string { return fmt.Sprintf("xz: at offset %d: %s", e.Off, e.Msg) }
func (e *Error) Unwrap() error { return e.Err }

func corrupt(off int, format string, args ...any) error {
	return &Error{Off: int64(off), Msg: fmt.Sprintf(format, args...), Err: ErrCorrupt}
}

func unsupported(off int, format string, args ...any) error {
	return &Error{Off: int64(off), Msg: fmt.Sprintf(format, args...), Err: ErrUnsupported}
}

type record struct{ unpadded, uncompressed uint64 }

// Reader decodes an in-memory .xz file. It is not safe for concurrent use.
type Reader struct {
	data []byte
	off  int // parse position in data (start of the next structure)
	err  error

	// Current stream.
	flags   [2]byte
	check   byte
	records []record

	// Current block, nil between blocks.
	block      io.Reader
	blockStart int // offset of the block header
	headerSize int
	lz         *lzma2Dec
	lzStart    int
	hash       hash.Hash
	crc32      hash.Hash32
	crc64      hash.Hash64
	nout       uint64
	wantComp   int64 // -1 if not in header
	wantUncomp int64
}

// NewReader checks the first stream header of data and returns a reader of
// the decompressed bytes.
func NewReader(data []byte) (*Reader, error) {
	r := &Reader{data: data}
	if err := r.streamHeader(); err != nil {
		return nil, err
	}
	return r, nil
}

// Decode decompresses all of data.
func Decode(data []byte) ([]byte, error) {
	r, err := NewReader(data)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	_, err = io.Copy(&out, r)
	return out.Bytes(), err
}

func checkSize(id byte) int {
	switch {
	case id == 0:
		return 0
	case id <= 3:
		return 4
	case id <= 6:
		return 8
	case id <= 9:
		return 16
	case id <= 12:
		return 32
	default:
		return 64
	}
}

func (r *Reader) streamHeader() error {
	b := r.data[r.off:]
	if len(b) < 12 {
		return corrupt(r.off, "truncated stream header")
	}
	if !bytes.Equal(b[:6], headerMagic) {
		return corrupt(r.off, "bad stream header magic % x", b[:6])
	}
	if crc32.ChecksumIEEE(b[6:8]) != binary.LittleEndian.Uint32(b[8:]) {
		return corrupt(r.off+8, "stream header CRC32 mismatch")
	}
	if b[6] != 0 || b[7]&0xF0 != 0 {
		return unsupported(r.off+6, "stream flags %#02x %#02x", b[6], b[7])
	}
	r.flags = [2]byte{b[6], b[7]}
	r.check = b[7] & 0x0F
	switch r.check {
	case 0, 1, 4, 10:
	default:
		return unsupported(r.off+7, "check type %d", r.check)
	}
	r.records = r.records[:0]
	r.off += 12
	return nil
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	for {
		if r.block != nil {
			n, err := r.block.Read(p)
			if n > 0 {
				r.nout += uint64(n)
				if r.hash != nil {
					r.hash.Write(p[:n])
				}
				if err == io.EOF {
					err = nil
					if e := r.endBlock(); e != nil {
						err = e
					}
				} else if err != nil {
					err = r.lzErr(err)
				}
				r.err = err
				return n, err
			}
			if err == io.EOF {
				if err := r.endBlock(); err != nil {
					r.err = err
					return 0, err
				}
				continue
			}
			if err == nil {
				continue
			}
			r.err = r.lzErr(err)
			return 0, r.err
		}
		if r.off >= len(r.data) {
			r.err = corrupt(r.off, "truncated: missing index")
			return 0, r.err
		}
		if r.data[r.off] == 0 {
			if err := r.indexAndFooter(); err != nil {
				r.err = err
				return 0, err
			}
			// Stream padding, then EOF or another stream.
			for r.off+4 <= len(r.data) && binary.LittleEndian.Uint32(r.data[r.off:]) == 0 {
				r.off += 4
			}
			if r.off == len(r.data) {
				r.err = io.EOF
				return 0, io.EOF
			}
			if err := r.streamHeader(); err != nil {
				r.err = err
				return 0, err
			}
			continue
		}
		if err := r.startBlock(); err != nil {
			r.err = err
			return 0, err
		}
	}
}

// WriteTo implements io.WriterTo: blocks without a BCJ or delta filter are
// written to w straight from the decoder's window, without the copy into a
// caller's buffer that Read makes.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	var n int64
	var buf []byte
	for {
		if r.block != nil && r.block == io.Reader(r.lz) && r.err == nil {
			b, err := r.lz.next()
			if len(b) > 0 {
				r.nout += uint64(len(b))
				if r.hash != nil {
					r.hash.Write(b)
				}
				k, werr := w.Write(b)
				n += int64(k)
				if werr == nil && k < len(b) {
					werr = io.ErrShortWrite
				}
				if werr != nil {
					return n, werr
				}
			}
			switch {
			case err == io.EOF:
				r.err = r.endBlock()
			case err != nil:
				r.err = r.lzErr(err)
			}
			continue
		}
		if r.err == io.EOF {
			return n, nil
		}
		if r.err != nil {
			return n, r.err
		}
		// Between blocks (Read parses the headers) or a filtered block.
		if buf == nil {
			buf = make([]byte, 64<<10)
		}
		k, err := r.Read(buf)
		if k > 0 {
			m, werr := w.Write(buf[:k])
			n += int64(m)
			if werr == nil && m < k {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return n, werr
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func (r *Reader) lzErr(err error) error {
	if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnsupported) {
		return err
	}
	return corrupt(r.blockStart, "block: %v", err)
}

// readVLI decodes an xz variable-length integer (at most 9 bytes).
func readVLI(b []byte) (uint64, int, bool) {
	var v uint64
	for i := 0; i < len(b) && i < 9; i++ {
		v |= uint64(b[i]&0x7F) << (7 * i)
		if b[i]&0x80 == 0 {
			if i > 0 && b[i] == 0 {
				return 0, 0, false // non-minimal encoding
			}
			return v, i + 1, true
		}
	}
	return 0, 0, false
}

func (r *Reader) startBlock() error {
	start := r.off
	hs := (int(r.data[start]) + 1) * 4
	if len(r.data)-start < hs {
		return corrupt(start, "truncated block header (%d bytes)", hs)
	}
	h := r.data[start : start+hs]
	if crc32.ChecksumIEEE(h[:hs-4]) != binary.LittleEndian.Uint32(h[hs-4:]) {
		return corrupt(start+hs-4, "block header CRC32 mismatch")
	}
	flags := h[1]
	if flags&0x3C != 0 {
		return unsupported(start+1, "block flags %#02x", flags)
	}
	nf := int(flags&3) + 1
	p := 2
	body := h[:hs-4]
	r.wantComp, r.wantUncomp = -1, -1
	if flags&0x40 != 0 {
		v, n, ok := readVLI(body[p:])
		if !ok || v == 0 || v > uint64(len(r.data)) {
			return corrupt(start+p, "bad compressed size")
		}
		r.wantComp = int64(v)
		p += n
	}
	if flags&0x80 != 0 {
		v, n, ok := readVLI(body[p:])
		if !ok || v > 1<<62 {
			return corrupt(start+p, "bad uncompressed size")
		}
		r.wantUncomp = int64(v)
		p += n
	}
	type fspec struct {
		id    uint64
		props []byte
		off   int
	}
	specs := make([]fspec, nf)
	for i := range specs {
		id, n, ok := readVLI(body[p:])
		if !ok {
			return corrupt(start+p, "bad filter id")
		}
		fo := start + p
		p += n
		ps, n, ok := readVLI(body[p:])
		if !ok || ps > uint64(len(body)-p-n) {
			return corrupt(start+p, "bad filter properties size")
		}
		p += n
		specs[i] = fspec{id, body[p : p+int(ps)], fo}
		p += int(ps)
	}
	for ; p < len(body); p++ {
		if body[p] != 0 {
			return corrupt(start+p, "non-zero block header padding")
		}
	}
	last := specs[nf-1]
	if last.id != idLZMA2 {
		return unsupported(last.off, "last filter %s (%#x), want lzma2", filterName(last.id), last.id)
	}
	if len(last.props) != 1 || last.props[0] > 40 {
		return corrupt(last.off, "bad lzma2 properties")
	}
	d := last.props[0]
	var dict uint64
	if d == 40 {
		dict = 0xFFFFFFFF
	} else {
		dict = uint64(2|d&1) << (d/2 + 11)
	}
	if dict > MaxDict {
		return unsupported(last.off, "lzma2 dictionary %d bytes exceeds %d", dict, MaxDict)
	}
	if dict < 4096 {
		dict = 4096
	}
	r.blockStart = start
	r.headerSize = hs
	r.lzStart = start + hs
	r.lz = newLZMA2(r.data[r.lzStart:], int(dict))
	var rd io.Reader = r.lz
	for i := nf - 2; i >= 0; i-- {
		f, err := newFilter(specs[i].id, specs[i].props, specs[i].off)
		if err != nil {
			return err
		}
		rd = f.wrap(rd)
	}
	r.block = rd
	r.nout = 0
	r.hash, r.crc32, r.crc64 = nil, nil, nil
	switch r.check {
	case 1:
		r.crc32 = crc32.NewIEEE()
		r.hash = r.crc32
	case 4:
		r.crc64 = crc64.New(crc64Table)
		r.hash = r.crc64
	case 10:
		r.hash = sha256.New()
	}
	return nil
}

func filterName(id uint64) string {
	if n, ok := filterNames[id]; ok {
		return n
	}
	return "unknown"
}

type filterSpec struct {
	f     filter
	start uint32
}

func newFilter(id uint64, props []byte, off int) (*filterSpec, error) {
	var start uint32
	bcjProps := func() error {
		switch len(props) {
		case 0:
		case 4:
			start = binary.LittleEndian.Uint32(props)
		default:
			return corrupt(off, "bad %s filter properties", filterName(id))
		}
		return nil
	}
	var f filter
	switch id {
	case idX86:
		f = &x86{}
	case idPowerPC:
		f = powerPC{}
	case idARM:
		f = arm{}
	case idARMThumb:
		f = armThumb{}
	case idSPARC:
		f = sparc{}
	case idIA64:
		f = ia64{}
	case idARM64:
		f = arm64{}
	case idDelta:
		if len(props) != 1 {
			return nil, corrupt(off, "bad delta filter properties")
		}
		return &filterSpec{f: &delta{dist: int(props[0]) + 1}}, nil
	default:
		return nil, unsupported(off, "filter %s (%#x) in a non-last position", filterName(id), id)
	}
	if err := bcjProps(); err != nil {
		return nil, err
	}
	return &filterSpec{f: f, start: start}, nil
}

func (s *filterSpec) wrap(r io.Reader) io.Reader {
	return &filterReader{r: r, f: s.f, pos: s.start, buf: make([]byte, 64<<10)}
}

// filterReader runs a filter over the output of r. buf[:conv] is converted
// and not yet returned from rd on; buf[conv:end] is waiting for more input.
type filterReader struct {
	r             io.Reader
	f             filter
	pos           uint32 // stream position of buf[0]
	buf           []byte
	rd, conv, end int
	eof           bool
}

func (fr *filterReader) Read(p []byte) (int, error) {
	for fr.rd == fr.conv {
		if fr.eof && fr.conv == fr.end {
			return 0, io.EOF
		}
		// Drop the returned bytes, keep the unconverted tail.
		fr.pos += uint32(fr.conv)
		n := copy(fr.buf, fr.buf[fr.conv:fr.end])
		fr.rd, fr.conv, fr.end = 0, 0, n
		for !fr.eof && fr.end < len(fr.buf) {
			k, err := fr.r.Read(fr.buf[fr.end:])
			fr.end += k
			if err == io.EOF {
				fr.eof = true
			} else if err != nil {
				return 0, err
			}
			if k == 0 && err == nil {
				break
			}
		}
		fr.conv = fr.f.convert(fr.buf[:fr.end], fr.pos)
		if fr.eof {
			fr.conv = fr.end // the tail passes through unchanged
		}
	}
	n := copy(p, fr.buf[fr.rd:fr.conv])
	fr.rd += n
	return n, nil
}

func (r *Reader) endBlock() error {
	comp := r.lz.consumed()
	r.lz.release()
	r.lz = nil
	if r.wantComp >= 0 && int64(comp) != r.wantComp {
		return corrupt(r.blockStart, "block compressed size %d, header says %d", comp, r.wantComp)
	}
	if r.wantUncomp >= 0 && r.nout != uint64(r.wantUncomp) {
		return corrupt(r.blockStart, "block uncompressed size %d, header says %d", r.nout, r.wantUncomp)
	}
	p := r.lzStart + comp
	for ; p%4 != 0; p++ {
		// Padding is aligned relative to the stream start; streams start at
		// multiples of 4 because stream padding is.
		if p >= len(r.data) || r.data[p] != 0 {
			return corrupt(p, "bad block padding")
		}
	}
	cs := checkSize(r.check)
	if len(r.data)-p < cs {
		return corrupt(p, "truncated block check")
	}
	c := r.data[p : p+cs]
	ok := true
	switch r.check {
	case 1:
		ok = binary.LittleEndian.Uint32(c) == r.crc32.Sum32()
	case 4:
		ok = binary.LittleEndian.Uint64(c) == r.crc64.Sum64()
	case 10:
		ok = bytes.Equal(c, r.hash.Sum(nil))
	}
	if !ok {
		return corrupt(p, "block check mismatch")
	}
	r.records = append(r.records, record{uint64(r.headerSize + comp + cs), r.nout})
	r.off = p + cs
	r.block = nil
	return nil
}

func (r *Reader) indexAndFooter() error {
	start := r.off
	b := r.data[start:]
	p := 1
	count, n, ok := readVLI(b[p:])
	if !ok || count != uint64(len(r.records)) {
		return corrupt(start+p, "index record count does not match %d blocks", len(r.records))
	}
	p += n
	for i := range r.records {
		u, n, ok := readVLI(b[p:])
		if !ok {
			return corrupt(start+p, "bad index record")
		}
		p += n
		c, n, ok := readVLI(b[p:])
		if !ok {
			return corrupt(start+p, "bad index record")
		}
		p += n
		if u != r.records[i].unpadded || c != r.records[i].uncompressed {
			return corrupt(start+p, "index record %d (%d, %d) does not match block (%d, %d)", i, u, c, r.records[i].unpadded, r.records[i].uncompressed)
		}
	}
	for ; p%4 != 0; p++ {
		if p >= len(b) || b[p] != 0 {
			return corrupt(start+p, "bad index padding")
		}
	}
	if len(b) < p+4+12 {
		return corrupt(start+p, "truncated index CRC or stream footer")
	}
	if crc32.ChecksumIEEE(b[:p]) != binary.LittleEndian.Uint32(b[p:]) {
		return corrupt(start+p, "index CRC32 mismatch")
	}
	p += 4
	f := b[p : p+12]
	if !bytes.Equal(f[10:], footerMagic) {
		return corrupt(start+p+10, "bad stream footer magic")
	}
	if crc32.ChecksumIEEE(f[4:10]) != binary.LittleEndian.Uint32(f) {
		return corrupt(start+p, "stream footer CRC32 mismatch")
	}
	if back := (int(binary.LittleEndian.Uint32(f[4:])) + 1) * 4; back != p {
		return corrupt(start+p+4, "backward size %d, index is %d bytes", back, p)
	}
	if f[8] != r.flags[0] || f[9] != r.flags[1] {
		return corrupt(start+p+8, "stream footer flags differ from header")
	}
	r.off = start + p + 12
	return nil
}
