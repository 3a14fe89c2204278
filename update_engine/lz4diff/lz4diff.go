// Package lz4diff applies the LZ4DIFF_BSDIFF and LZ4DIFF_PUFFDIFF install
// operations (spec payload-format.md §3.7, AOSP update_engine lz4diff/).
//
// Patch layout (integers big endian):
//
//	[0,8)   "LZ4DIFF\x00"
//	[8,12)  version (1)
//	[12,16) n: size of the Lz4diffHeader protobuf
//	[16,16+n) Lz4diffHeader{src_info=1, dst_info=2, inner_type=3}
//	rest    inner patch: BSDF2/BSDIFF40 (inner_type 0) or PUF1 (1)
//
// CompressionInfo{algo=1 {type=1 UNCOMPRESSED/LZ4/LZ4HC, level=2},
// block_info=2 repeated {uncompressed_offset=1, uncompressed_length=2,
// compressed_length=3, sha256_hash=4, postfix_bspatch=5},
// zero_padding_enabled=3}.
//
// Apply decompresses the source blocks (LZ4 partial decoding, leading zero
// padding skipped when enabled; blocks with compressed_length ≥
// uncompressed_length are stored), runs the inner patch on the uncompressed
// data, re-compresses every destination block from its offset to the end of
// the data into exactly compressed_length bytes with liblz4's destSize
// functions (update_engine/liblz4), zero-filling the rest (in front with zero
// padding), checks sha256_hash and applies postfix_bspatch where present,
// and pads the result with zeros to a whole number of 4 KiB blocks.
// The LZ4HC level goes to liblz4 as AOSP passes it, every int32 accepted:
// below 1 means 9, above 12 means 12 (levels 10…12 are the optimal parser).
package lz4diff

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vabc-go/vabc/update_engine/bspatch"
	"github.com/vabc-go/vabc/update_engine/liblz4"
	"github.com/vabc-go/vabc/update_engine/puffin"
	"google.golang.org/protobuf/encoding/protowire"
)

// Magic starts every LZ4DIFF patch (with its NUL, 8 bytes).
const Magic = "LZ4DIFF\x00"

const (
	version    = 1
	headerSize = 16
	blockSize  = 4096
)

var (
	// ErrCorrupt marks malformed patches and source data.
	ErrCorrupt = errors.New("lz4diff: corrupt")
	// ErrUnsupported marks patch features this package does not implement.
	ErrUnsupported = errors.New("lz4diff: unsupported")
)

func corrupt(format string, args ...any) error {
	return fmt.Errorf("lz4diff: %s: %w", fmt.Sprintf(format, args...), ErrCorrupt)
}

// Algorithm is CompressionAlgorithm.Type.
type Algorithm int32

const (
	Uncompressed Algorithm = 0
	LZ4          Algorithm = 1
	LZ4HC        Algorithm = 2
)

func (a Algorithm) String() string {
	switch a {
	case Uncompressed:
		return "UNCOMPRESSED"
	case LZ4:
		return "LZ4"
	case LZ4HC:
		return "LZ4HC"
	}
	return fmt.Sprintf("Algorithm(%d)", int32(a))
}

// InnerType is Lz4diffHeader.inner_type.
type InnerType int32

const (
	InnerBsdiff   InnerType = 0
	InnerPuffdiff InnerType = 1
)

// Block is one CompressedBlockInfo.
type Block struct {
	UncompressedOffset, UncompressedLength, CompressedLength uint64
	SHA256                                                   []byte
	PostfixBspatch                                           []byte
}

// compressed is CompressedBlock::IsCompressed.
func (b Block) compressed() bool { return b.CompressedLength < b.UncompressedLength }

// Info is one CompressionInfo.
type Info struct {
	Algo        Algorithm
	Level       int32
	Blocks      []Block
	ZeroPadding bool
}

// Header is a decoded Lz4diffHeader plus where the inner patch starts.
type Header struct {
	Src, Dst    Info
	Inner       InnerType
	InnerOffset int
}

type field struct {
	num protowire.Number
	typ protowire.Type
	v   uint64
	b   []byte
}

func fields(b []byte) ([]field, error) {
	var out []field
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, corrupt("bad protobuf tag")
		}
		b = b[n:]
		f := field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			f.v, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			f.b, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return nil, corrupt("bad protobuf field %d", num)
		}
		b = b[n:]
		out = append(out, f)
	}
	return out, nil
}

func parseInfo(b []byte) (Info, error) {
	var in Info
	fs, err := fields(b)
	if err != nil {
		return in, err
	}
	for _, f := range fs {
		switch {
		case f.num == 1 && f.typ == protowire.BytesType:
			afs, err := fields(f.b)
			if err != nil {
				return in, err
			}
			for _, a := range afs {
				if a.typ == protowire.VarintType && a.num == 1 {
					in.Algo = Algorithm(int32(a.v))
				} else if a.typ == protowire.VarintType && a.num == 2 {
					in.Level = int32(a.v)
				}
			}
		case f.num == 2 && f.typ == protowire.BytesType:
			bfs, err := fields(f.b)
			if err != nil {
				return in, err
			}
			var blk Block
			for _, g := range bfs {
				switch {
				case g.num == 1 && g.typ == protowire.VarintType:
					blk.UncompressedOffset = g.v
				case g.num == 2 && g.typ == protowire.VarintType:
					blk.UncompressedLength = g.v
				case g.num == 3 && g.typ == protowire.VarintType:
					blk.CompressedLength = g.v
				case g.num == 4 && g.typ == protowire.BytesType:
					blk.SHA256 = g.b
				case g.num == 5 && g.typ == protowire.BytesType:
					blk.PostfixBspatch = g.b
				}
			}
			in.Blocks = append(in.Blocks, blk)
		case f.num == 3 && f.typ == protowire.VarintType:
			in.ZeroPadding = f.v != 0
		}
	}
	return in, nil
}

// ParseHeader decodes the container and header of patch.
func ParseHeader(patch []byte) (*Header, error) {
	if len(patch) < headerSize || string(patch[:8]) != Magic {
		return nil, corrupt("no %q magic", Magic[:7])
	}
	if v := binary.BigEndian.Uint32(patch[8:]); v != version {
		return nil, fmt.Errorf("lz4diff: version %d (only %d exists): %w", v, version, ErrUnsupported)
	}
	n := binary.BigEndian.Uint32(patch[12:])
	if uint64(n) > uint64(len(patch)-headerSize) {
		return nil, corrupt("header of %d bytes in a %d-byte patch", n, len(patch))
	}
	h := &Header{InnerOffset: headerSize + int(n)}
	fs, err := fields(patch[headerSize : headerSize+int(n)])
	if err != nil {
		return nil, err
	}
	for _, f := range fs {
		switch {
		case (f.num == 1 || f.num == 2) && f.typ == protowire.BytesType:
			in, err := parseInfo(f.b)
			if err != nil {
				return nil, err
			}
			if f.num == 1 {
				h.Src = in
			} else {
				h.Dst = in
			}
		case f.num == 3 && f.typ == protowire.VarintType:
			h.Inner = InnerType(int32(f.v))
		}
	}
	return h, nil
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func (in *Info) encode() []byte {
	var algo []byte
	algo = appendVarintField(algo, 1, uint64(int64(in.Algo)))
	algo = appendVarintField(algo, 2, uint64(int64(in.Level)))
	b := appendBytesField(nil, 1, algo)
	for _, blk := range in.Blocks {
		var m []byte
		m = appendVarintField(m, 1, blk.UncompressedOffset)
		m = appendVarintField(m, 2, blk.UncompressedLength)
		m = appendVarintField(m, 3, blk.CompressedLength)
		if len(blk.SHA256) > 0 {
			m = appendBytesField(m, 4, blk.SHA256)
		}
		if len(blk.PostfixBspatch) > 0 {
			m = appendBytesField(m, 5, blk.PostfixBspatch)
		}
		b = appendBytesField(b, 2, m)
	}
	if in.ZeroPadding {
		b = appendVarintField(b, 3, 1)
	}
	return b
}

// Encode serializes the container and header followed by inner.
func (h *Header) Encode(inner []byte) []byte {
	m := appendBytesField(nil, 1, h.Src.encode())
	m = appendBytesField(m, 2, h.Dst.encode())
	m = appendVarintField(m, 3, uint64(int64(h.Inner)))
	out := append([]byte(Magic), make([]byte, 8)...)
	binary.BigEndian.PutUint32(out[8:], version)
	binary.BigEndian.PutUint32(out[12:], uint32(len(m)))
	out = append(out, m...)
	return append(out, inner...)
}

// sizes checks that blocks are contiguous from offset 0 and returns their
// total uncompressed and compressed sizes.
func sizes(blocks []Block, side string) (unc, comp uint64, err error) {
	for i, b := range blocks {
		if b.UncompressedOffset != unc {
			return 0, 0, corrupt("%s block %d starts at %d, want %d", side, i, b.UncompressedOffset, unc)
		}
		if unc+b.UncompressedLength < unc || comp+b.CompressedLength < comp {
			return 0, 0, corrupt("%s block %d lengths overflow", side, i)
		}
		unc += b.UncompressedLength
		comp += b.CompressedLength
	}
	return unc, comp, nil
}

// Decompress is TryDecompressBlob: the uncompressed data of blob, which must
// be exactly the blocks' compressed bytes.
func Decompress(blob []byte, in *Info) ([]byte, error) {
	unc, comp, err := sizes(in.Blocks, "source")
	if err != nil {
		return nil, err
	}
	if comp != uint64(len(blob)) {
		return nil, corrupt("source of %d bytes, its blocks hold %d", len(blob), comp)
	}
	// An LZ4 block expands at most 255×.
	if unc > comp*255+uint64(len(in.Blocks)) {
		return nil, corrupt("%d uncompressed bytes from %d compressed", unc, comp)
	}
	out := make([]byte, 0, unc)
	off := uint64(0)
	for i, b := range in.Blocks {
		cl := blob[off : off+b.CompressedLength]
		off += b.CompressedLength
		if !b.compressed() {
			if len(cl) == 0 {
				return nil, corrupt("source block %d is empty", i)
			}
			out = append(out, cl...)
			continue
		}
		if in.ZeroPadding {
			k := 0
			for k < min(blockSize, len(cl)) && cl[k] == 0 {
				k++
			}
			cl = cl[k:]
		}
		n := len(out)
		out, err = liblz4.DecompressPartial(out, cl, int(b.UncompressedLength))
		if err != nil {
			return nil, fmt.Errorf("lz4diff: source block %d: %w", i, err)
		}
		if uint64(len(out)-n) != b.UncompressedLength {
			return nil, corrupt("source block %d decompresses to %d bytes, want %d", i, len(out)-n, b.UncompressedLength)
		}
	}
	return out, nil
}

// Compress is TryCompressBlob: the blocks of in re-compressed from data.
func Compress(data []byte, in *Info) ([]byte, error) {
	unc, comp, err := sizes(in.Blocks, "destination")
	if err != nil {
		return nil, err
	}
	if unc != uint64(len(data)) {
		return nil, corrupt("patched data is %d bytes, the destination blocks hold %d", len(data), unc)
	}
	if in.Algo != LZ4 && in.Algo != LZ4HC {
		for _, b := range in.Blocks {
			if b.compressed() {
				return nil, fmt.Errorf("lz4diff: destination algorithm %v: %w", in.Algo, ErrUnsupported)
			}
		}
	}
	// Each compressed block holds at least one byte per 255 uncompressed.
	if comp > unc+uint64(len(in.Blocks))*blockSize {
		return nil, corrupt("%d compressed bytes for %d uncompressed", comp, unc)
	}
	out := make([]byte, (comp+blockSize-1)/blockSize*blockSize)
	// Real images compress each byte about once; a patch asking for far more
	// work than that (many tiny blocks over a large, match-poor input) is
	// refused instead of running for hours.
	startBudget := 8*int64(unc) + 1<<16
	budget := startBudget
	off := uint64(0)
	for _, b := range in.Blocks {
		dst := out[off : off+b.CompressedLength]
		off += b.CompressedLength
		if !b.compressed() {
			copy(dst, data[b.UncompressedOffset:b.UncompressedOffset+b.CompressedLength])
			continue
		}
		rest := data[b.UncompressedOffset:]
		var got []byte
		if in.Algo == LZ4HC {
			var ok bool
			got, _, ok = liblz4.CompressHCDestSizeBudget(rest, int(b.CompressedLength), int(in.Level), &budget)
			if !ok {
				return nil, corrupt("re-compressing %d blocks of %d bytes takes more than %d match searches", len(in.Blocks), unc, startBudget)
			}
		} else {
			got, _ = liblz4.CompressDestSize(rest, int(b.CompressedLength))
		}
		if in.ZeroPadding {
			copy(dst[len(dst)-len(got):], got)
		} else {
			copy(dst, got)
		}
	}
	return out, nil
}

// maxOutput bounds what a patch may make.
const maxOutput = 1 << 30

// Apply applies an LZ4DIFF patch to src (the concatenated source blocks of
// the operation) and returns the new data.
func Apply(src, patch []byte) ([]byte, error) {
	h, err := ParseHeader(patch)
	if err != nil {
		return nil, err
	}
	unc, _, err := sizes(h.Dst.Blocks, "destination")
	if err != nil {
		return nil, err
	}
	if unc > maxOutput {
		return nil, corrupt("destination of %d uncompressed bytes", unc)
	}
	old, err := Decompress(src, &h.Src)
	if err != nil {
		return nil, err
	}
	inner := patch[h.InnerOffset:]
	var patched []byte
	switch h.Inner {
	case InnerBsdiff:
		ih, err := bspatch.ParseHeader(inner)
		if err != nil {
			return nil, err
		}
		if uint64(ih.NewSize) != unc {
			return nil, corrupt("inner patch makes %d bytes, the destination blocks hold %d", ih.NewSize, unc)
		}
		var buf bytes.Buffer
		buf.Grow(int(min(ih.NewSize, 64<<20))) // bspatch grows it as it really writes
		if err := bspatch.Apply(old, inner, &buf); err != nil {
			return nil, err
		}
		patched = buf.Bytes()
	case InnerPuffdiff:
		patched, err = puffin.Apply(old, inner, int64(unc), 0)
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("lz4diff: inner patch type %d: %w", int32(h.Inner), ErrUnsupported)
	}
	out, err := Compress(patched, &h.Dst)
	if err != nil {
		return nil, err
	}
	// AOSP checks sha256_hash only where a postfix patch follows; checking
	// it wherever it is given names the block that went wrong.
	off := uint64(0)
	for i, b := range h.Dst.Blocks {
		blk := out[off : off+b.CompressedLength]
		off += b.CompressedLength
		if len(b.SHA256) > 0 {
			if got := sha256.Sum256(blk); !bytes.Equal(got[:], b.SHA256) {
				return nil, corrupt("destination block %d re-compresses to sha256 %x, the patch says %x (a different LZ4 version made the patch?)", i, got, b.SHA256)
			}
		}
	}
	if !hasPostfix(h.Dst.Blocks) {
		return out, nil
	}
	var fixed []byte
	off = 0
	for i, b := range h.Dst.Blocks {
		blk := out[off : off+b.CompressedLength]
		off += b.CompressedLength
		if len(b.PostfixBspatch) == 0 {
			fixed = append(fixed, blk...)
			continue
		}
		var buf bytes.Buffer
		if err := bspatch.Apply(blk, b.PostfixBspatch, &buf); err != nil {
			return nil, fmt.Errorf("lz4diff: destination block %d postfix: %w", i, err)
		}
		fixed = append(fixed, buf.Bytes()...)
	}
	return append(fixed, out[off:]...), nil
}

func hasPostfix(blocks []Block) bool {
	for _, b := range blocks {
		if len(b.PostfixBspatch) > 0 {
			return true
		}
	}
	return false
}
