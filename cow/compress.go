package cow

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/andybalholm/brotli"
	"github.com/golang/snappy"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
)

// Codecs (§2.4). This file is the method-id table, after archive/zip's
// register.go: Decompress dispatches on the algorithm, NewCompressor builds a
// per-algorithm Compressor. Each data unit (one block in v2, one unit of the
// compression factor in v3) is compressed independently; encoders and
// decoders are pooled and reset between units.
//
// On-disk encodings:
//
//	gz      zlib stream (RFC 1950 wrapper around deflate), as zlib compress2
//	brotli  raw brotli stream, window 22 (BROTLI_DEFAULT_WINDOW)
//	lz4     LZ4 block format, no frame, no size prefix
//	zstd    one zstd frame with frame content size; the window is
//	        log2(unit size). A unit never exceeds the window, so the frame is
//	        single-segment (no window descriptor), as libzstd's ZSTD_compress2
//	        produces with windowLog = log2(unit) and a known source size.
//	snappy  snappy block format (non-AOSP extension 0xF0)
//	xz      xz stream, one LZMA2 block, dictionary = unit size (extension 0xF1)

// ErrAlgorithm is returned for an unknown or unsupported compression id.
var ErrAlgorithm = errors.New("cow: unsupported compression algorithm")

// ErrDecompress marks corrupt compressed payloads. It wraps ErrCorrupt.
var ErrDecompress = fmt.Errorf("%w: bad compressed data", ErrCorrupt)

// DefaultLevel is the writer's default level for alg (GetDefaultCompressionLevel):
// gz 9 (Z_BEST_COMPRESSION), brotli 11 (BROTLI_DEFAULT_QUALITY), zstd 3
// (ZSTD_defaultCLevel). Other algorithms have no level and return 0.
func DefaultLevel(alg Compression) int {
	switch alg {
	case CompressionGz:
		return 9
	case CompressionBrotli:
		return 11
	case CompressionZstd:
		return 3
	}
	return 0
}

// ParseCompressionOption parses the writers' option string "<algo>[,<level>]"
// (CompressionAlgorithmFromString + ParseOptions). The algorithm is one of
// none, gz, brotli, lz4, zstd, snappy, xz; "" means none. The level is a
// signed integer (negative zstd levels are allowed); without it the
// algorithm's DefaultLevel is returned.
func ParseCompressionOption(s string) (alg Compression, level int, err error) {
	name, lv, hasLevel := strings.Cut(s, ",")
	alg, ok := ParseCompressionName(strings.TrimSpace(name))
	if !ok {
		return 0, 0, fmt.Errorf("%w: %q", ErrAlgorithm, name)
	}
	level = DefaultLevel(alg)
	if hasLevel {
		level, err = strconv.Atoi(strings.TrimSpace(lv))
		if err != nil {
			return 0, 0, fmt.Errorf("cow: bad compression level in %q: %v", s, err)
		}
		if err := checkLevel(alg, level); err != nil {
			return 0, 0, err
		}
	}
	return alg, level, nil
}

func checkLevel(alg Compression, level int) error {
	switch alg {
	case CompressionGz:
		if level < -1 || level > 9 {
			return fmt.Errorf("cow: gz level %d out of range [-1, 9]", level)
		}
	case CompressionBrotli:
		if level < 0 || level > 11 {
			return fmt.Errorf("cow: brotli level %d out of range [0, 11]", level)
		}
	case CompressionZstd:
		if level < -(1<<17) || level > 22 {
			return fmt.Errorf("cow: zstd level %d out of range", level)
		}
	}
	return nil
}

// Compressor compresses one independent unit at a time. Compress appends the
// compressed form of src to dst and returns the extended slice. A Compressor
// is safe for concurrent use; its encoders come from a pool.
type Compressor interface {
	Compress(dst, src []byte) ([]byte, error)
}

// NewCompressor returns a compressor for alg at level, for units of at most
// unitSize bytes. unitSize fixes the zstd window (log2(unitSize): 12 for v2's
// 4 KiB blocks, log2(max_compression_size) in v3) and the xz dictionary.
func NewCompressor(alg Compression, level int, unitSize int) (Compressor, error) {
	if unitSize <= 0 || unitSize&(unitSize-1) != 0 {
		return nil, fmt.Errorf("cow: compression unit size %d is not a power of two", unitSize)
	}
	if err := checkLevel(alg, level); err != nil {
		return nil, err
	}
	switch alg {
	case CompressionNone:
		return noneCompressor{}, nil
	case CompressionGz:
		return newGzCompressor(level), nil
	case CompressionBrotli:
		return newBrotliCompressor(level), nil
	case CompressionLz4:
		return &lz4Compressor{}, nil
	case CompressionZstd:
		return newZstdCompressor(level, unitSize)
	case CompressionSnappy:
		return snappyCompressor{}, nil
	case CompressionXz:
		return &xzCompressor{dictCap: max(unitSize, xzMinDict)}, nil
	}
	return nil, fmt.Errorf("%w: %v", ErrAlgorithm, alg)
}

// Decompress decodes src, compressed with alg, into dst, whose length is the
// exact expected decoded size, and returns the number of bytes produced.
//
//   - none: src is copied; its length must equal len(dst).
//   - gz, brotli: the stream is decoded until dst is full or the stream ends
//     (AOSP's streaming decompressors); fewer bytes than len(dst) is not an
//     error here, the caller decides.
//   - lz4, zstd, snappy, xz: must produce exactly len(dst) bytes.
//
// Decompress never allocates output beyond len(dst), whatever sizes src
// claims. It is safe for concurrent use.
func Decompress(alg Compression, dst, src []byte) (int, error) {
	switch alg {
	case CompressionNone:
		if len(src) != len(dst) {
			return 0, fmt.Errorf("%w: uncompressed payload is %d bytes, want %d", ErrDecompress, len(src), len(dst))
		}
		return copy(dst, src), nil
	case CompressionGz:
		return decompressGz(dst, src)
	case CompressionBrotli:
		return decompressBrotli(dst, src)
	case CompressionLz4:
		return decompressLz4(dst, src)
	case CompressionZstd:
		return decompressZstd(dst, src)
	case CompressionSnappy:
		return decompressSnappy(dst, src)
	case CompressionXz:
		return decompressXz(dst, src)
	}
	return 0, fmt.Errorf("%w: %v", ErrAlgorithm, alg)
}

func decompressErr(alg Compression, err error) error {
	return fmt.Errorf("%w (%v): %v", ErrDecompress, alg, err)
}

// appendWriter is an io.Writer appending to a byte slice.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

// readStream reads r into dst until dst is full or r ends cleanly.
func readStream(alg Compression, r io.Reader, dst []byte) (int, error) {
	n, idle := 0, 0
	for n < len(dst) {
		m, err := r.Read(dst[n:])
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, decompressErr(alg, err)
		}
		if m == 0 {
			// (0, nil) is allowed now and then; forever would hang us.
			if idle++; idle > 100 {
				return n, decompressErr(alg, io.ErrNoProgress)
			}
		} else {
			idle = 0
		}
	}
	return n, nil
}

// none

type noneCompressor struct{}

func (noneCompressor) Compress(dst, src []byte) ([]byte, error) { return append(dst, src...), nil }

// gz: zlib stream. klauspost's zlib is byte-compatible with compress/zlib's
// stream format (any zlib inflater reads it) and faster.

type gzCompressor struct {
	level int
	pool  sync.Pool // *zlib.Writer
}

func newGzCompressor(level int) *gzCompressor { return &gzCompressor{level: level} }

func (c *gzCompressor) Compress(dst, src []byte) ([]byte, error) {
	aw := &appendWriter{b: dst}
	zw, _ := c.pool.Get().(*zlib.Writer)
	if zw == nil {
		var err error
		if zw, err = zlib.NewWriterLevel(aw, c.level); err != nil {
			return dst, err
		}
	} else {
		zw.Reset(aw)
	}
	if _, err := zw.Write(src); err != nil {
		return dst, err
	}
	if err := zw.Close(); err != nil {
		return dst, err
	}
	c.pool.Put(zw)
	return aw.b, nil
}

var zlibReaders sync.Pool // io.ReadCloser implementing zlib.Resetter

func decompressGz(dst, src []byte) (int, error) {
	br := bytes.NewReader(src)
	zr, _ := zlibReaders.Get().(io.ReadCloser)
	if zr == nil {
		var err error
		if zr, err = zlib.NewReader(br); err != nil {
			return 0, decompressErr(CompressionGz, err)
		}
	} else if err := zr.(zlib.Resetter).Reset(br, nil); err != nil {
		zlibReaders.Put(zr)
		return 0, decompressErr(CompressionGz, err)
	}
	n, err := readStream(CompressionGz, zr, dst)
	zlibReaders.Put(zr)
	return n, err
}

// brotli: raw stream, quality = level, window 22 (BROTLI_DEFAULT_WINDOW).

const brotliDefaultWindow = 22

type brotliCompressor struct {
	level int
	pool  sync.Pool // *brotli.Writer
}

func newBrotliCompressor(level int) *brotliCompressor { return &brotliCompressor{level: level} }

func (c *brotliCompressor) Compress(dst, src []byte) ([]byte, error) {
	aw := &appendWriter{b: dst}
	bw, _ := c.pool.Get().(*brotli.Writer)
	if bw == nil {
		bw = brotli.NewWriterOptions(aw, brotli.WriterOptions{Quality: c.level, LGWin: brotliDefaultWindow})
	} else {
		bw.Reset(aw)
	}
	if _, err := bw.Write(src); err != nil {
		return dst, err
	}
	if err := bw.Close(); err != nil {
		return dst, err
	}
	c.pool.Put(bw)
	return aw.b, nil
}

var brotliReaders sync.Pool // *brotli.Reader

func decompressBrotli(dst, src []byte) (int, error) {
	br := bytes.NewReader(src)
	r, _ := brotliReaders.Get().(*brotli.Reader)
	if r == nil {
		r = brotli.NewReader(br)
	} else if err := r.Reset(br); err != nil {
		return 0, decompressErr(CompressionBrotli, err)
	}
	n, err := readStream(CompressionBrotli, r, dst)
	brotliReaders.Put(r)
	return n, err
}

// lz4: raw block (LZ4_compress_default / LZ4_decompress_safe). The
// encoder is pierrec's port of the reference LZ4_compress_fast
// (acceleration 1 = LZ4_compress_default): close to liblz4's output and, on
// 64 KiB units, about 4× faster than its default block compressor.

type lz4Compressor struct {
	pool sync.Pool // *lz4.CompressorCCompat
}

func (c *lz4Compressor) Compress(dst, src []byte) ([]byte, error) {
	lc, _ := c.pool.Get().(*lz4.CompressorCCompat)
	if lc == nil {
		lc = new(lz4.CompressorCCompat)
	}
	defer c.pool.Put(lc)
	start := len(dst)
	dst = grow(dst, lz4.CompressBlockBound(len(src)))
	n, err := lc.CompressBlock(src, dst[start:])
	if err != nil {
		return dst[:start], err
	}
	if n == 0 && len(src) > 0 {
		return dst[:start], errors.New("cow: lz4 produced no output with a full-size buffer")
	}
	return dst[:start+n], nil
}

// grow extends dst's capacity so that n more bytes fit, and returns dst
// resliced to len(dst)+n.
func grow(dst []byte, n int) []byte {
	l := len(dst)
	if cap(dst)-l < n {
		nb := make([]byte, l, l+n)
		copy(nb, dst)
		dst = nb
	}
	return dst[:l+n]
}

func decompressLz4(dst, src []byte) (int, error) {
	n, err := lz4.UncompressBlock(src, dst)
	if err != nil {
		return n, decompressErr(CompressionLz4, err)
	}
	if n != len(dst) {
		return n, decompressErr(CompressionLz4, fmt.Errorf("decoded %d bytes, want %d", n, len(dst)))
	}
	return n, nil
}

// zstd: one frame per unit, window = unit size.

type zstdKey struct{ level, window int }

var zstdEncoders sync.Map // zstdKey → *sync.Pool of *zstd.Encoder

type zstdCompressor struct{ pool *sync.Pool }

func newZstdCompressor(level, unitSize int) (*zstdCompressor, error) {
	if level == 0 {
		level = DefaultLevel(CompressionZstd) // as ZSTD_CLEVEL_DEFAULT
	}
	window := max(unitSize, zstd.MinWindowSize)
	if window > zstd.MaxWindowSize {
		return nil, fmt.Errorf("cow: zstd unit size %d too large", unitSize)
	}
	key := zstdKey{level, window}
	p, _ := zstdEncoders.LoadOrStore(key, &sync.Pool{New: func() any {
		e, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(key.level)),
			zstd.WithWindowSize(key.window),
			zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderCRC(false), // ZSTD_compress2 default: no checksum
			zstd.WithZeroFrames(true),
		)
		if err != nil {
			return err
		}
		return e
	}})
	pool := p.(*sync.Pool)
	// Surface option errors now rather than at the first Compress.
	v := pool.Get()
	if err, ok := v.(error); ok {
		return nil, err
	}
	pool.Put(v)
	return &zstdCompressor{pool: pool}, nil
}

func (c *zstdCompressor) Compress(dst, src []byte) ([]byte, error) {
	v := c.pool.Get()
	e, ok := v.(*zstd.Encoder)
	if !ok {
		return dst, fmt.Errorf("cow: zstd encoder: %v", v)
	}
	out := e.EncodeAll(src, dst)
	c.pool.Put(e)
	return out, nil
}

// zstdMaxWindow bounds the history a frame may ask the decoder to keep. AOSP
// frames use at most log2(256 KiB); 8 MiB leaves room for other writers.
const zstdMaxWindow = 8 << 20

var zstdDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
	return zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithDecoderMaxWindow(zstdMaxWindow),
		zstd.WithDecodeAllCapLimit(true), // never grow dst beyond its capacity
	)
})

func decompressZstd(dst, src []byte) (int, error) {
	d, err := zstdDecoder()
	if err != nil {
		return 0, err
	}
	if len(dst) == 0 {
		// DecodeAll with zero capacity would ignore the cap limit and
		// allocate; an empty unit never occurs in a COW.
		return 0, decompressErr(CompressionZstd, errors.New("empty destination"))
	}
	// With the cap limit the decoder stops (with an error) at the first
	// block that would grow the output past cap(dst): at most one block
	// (128 KiB) is ever decoded beyond it, into a scratch buffer.
	out, err := d.DecodeAll(src, dst[:0:len(dst)])
	if err != nil {
		return 0, decompressErr(CompressionZstd, err)
	}
	if len(out) != len(dst) || &out[0] != &dst[0] {
		return 0, decompressErr(CompressionZstd, fmt.Errorf("decoded %d bytes, want %d", len(out), len(dst)))
	}
	return len(out), nil
}

// snappy (extension): block format.

type snappyCompressor struct{}

func (snappyCompressor) Compress(dst, src []byte) ([]byte, error) {
	start := len(dst)
	dst = grow(dst, snappy.MaxEncodedLen(len(src)))
	enc := snappy.Encode(dst[start:], src)
	return dst[:start+len(enc)], nil
}

func decompressSnappy(dst, src []byte) (int, error) {
	n, err := snappy.DecodedLen(src)
	if err != nil {
		return 0, decompressErr(CompressionSnappy, err)
	}
	if n != len(dst) {
		return 0, decompressErr(CompressionSnappy, fmt.Errorf("decoded length %d, want %d", n, len(dst)))
	}
	out, err := snappy.Decode(dst, src)
	if err != nil {
		return 0, decompressErr(CompressionSnappy, err)
	}
	if len(out) != len(dst) || (n > 0 && &out[0] != &dst[0]) {
		return 0, decompressErr(CompressionSnappy, errors.New("decoder did not fill the destination"))
	}
	return n, nil
}

// xz (extension): one stream, one LZMA2 block.

const xzMinDict = 4096 // lzma.MinDictCap

type xzCompressor struct{ dictCap int }

func (c *xzCompressor) Compress(dst, src []byte) ([]byte, error) {
	aw := &appendWriter{b: dst}
	w, err := xz.WriterConfig{DictCap: c.dictCap, CheckSum: xz.CRC32}.NewWriter(aw)
	if err != nil {
		return dst, err
	}
	if _, err := w.Write(src); err != nil {
		return dst, err
	}
	if err := w.Close(); err != nil {
		return dst, err
	}
	return aw.b, nil
}

// xzMaxDict bounds the LZMA2 dictionary an xz payload may declare: the Go
// decoder allocates the whole dictionary up front. 8 MiB is xz's default
// preset (-6); our writer uses the unit size.
func xzMaxDict(outLen int) int64 { return max(8<<20, 2*int64(outLen)) }

func decompressXz(dst, src []byte) (int, error) {
	if err := checkXzDict(src, xzMaxDict(len(dst))); err != nil {
		return 0, decompressErr(CompressionXz, err)
	}
	r, err := xz.ReaderConfig{DictCap: xzMinDict, SingleStream: true}.NewReader(bytes.NewReader(src))
	if err != nil {
		return 0, decompressErr(CompressionXz, err)
	}
	n, err := io.ReadFull(r, dst)
	if err != nil {
		return n, decompressErr(CompressionXz, err)
	}
	// The stream must end exactly here (this also verifies the check).
	var one [1]byte
	if m, err := r.Read(one[:]); m != 0 || err != io.EOF {
		if err == nil || err == io.EOF {
			err = fmt.Errorf("more than %d decoded bytes", len(dst))
		}
		return n, decompressErr(CompressionXz, err)
	}
	return n, nil
}

// checkXzDict parses the xz stream header and the first block header and
// rejects anything but a single LZMA2 filter with a dictionary ≤ limit.
func checkXzDict(src []byte, limit int64) error {
	const streamHeaderLen = 12
	if len(src) < streamHeaderLen+2 || !bytes.HasPrefix(src, []byte{0xFD, '7', 'z', 'X', 'Z', 0}) {
		return errors.New("not an xz stream")
	}
	p := src[streamHeaderLen:]
	if p[0] == 0 {
		return nil // index indicator: a stream without blocks
	}
	hlen := (int(p[0]) + 1) * 4
	if hlen > len(p) {
		return errors.New("truncated block header")
	}
	h := p[1:hlen]
	flags := h[0]
	h = h[1:]
	if flags&0x3 != 0 {
		return errors.New("more than one filter")
	}
	uvarint := func() (uint64, bool) {
		var v uint64
		for i := 0; i < 9 && i < len(h); i++ {
			v |= uint64(h[i]&0x7F) << (7 * i)
			if h[i]&0x80 == 0 {
				h = h[i+1:]
				return v, true
			}
		}
		return 0, false
	}
	for _, present := range []bool{flags&0x40 != 0, flags&0x80 != 0} {
		if present {
			if _, ok := uvarint(); !ok {
				return errors.New("bad size field in block header")
			}
		}
	}
	id, ok1 := uvarint()
	psize, ok2 := uvarint()
	if !ok1 || !ok2 || id != 0x21 || psize != 1 || len(h) < 1 {
		return errors.New("block filter is not LZMA2")
	}
	b := h[0]
	if b > 40 {
		return fmt.Errorf("bad LZMA2 dictionary byte %#x", b)
	}
	dict := int64(0xFFFFFFFF)
	if b < 40 {
		dict = int64(2|b&1) << (b/2 + 11)
	}
	if dict > limit {
		return fmt.Errorf("LZMA2 dictionary %d exceeds limit %d", dict, limit)
	}
	return nil
}

// log2 returns log2(n) for a power of two n.
func log2(n uint64) int { return bits.TrailingZeros64(n) }
