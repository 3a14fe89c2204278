package puffin

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/vabc-go/vabc/update_engine/bsdiff"
	"github.com/vabc-go/vabc/update_engine/bspatch"
	"google.golang.org/protobuf/encoding/protowire"
)

// Magic starts every puffin patch.
const Magic = "PUF1"

// PatchType is PatchHeader.type: the inner patch algorithm.
type PatchType int32

const (
	PatchBsdiff   PatchType = 0 // BSDF2 / BSDIFF40 (also: field absent)
	PatchZucchini PatchType = 1 // brotli-compressed Zucchini ensemble patch
)

func (t PatchType) String() string {
	switch t {
	case PatchBsdiff:
		return "BSDIFF"
	case PatchZucchini:
		return "ZUCCHINI"
	}
	return fmt.Sprintf("PatchType(%d)", int32(t))
}

// StreamInfo describes one side of a patch (puffin.metadata.StreamInfo).
type StreamInfo struct {
	Deflates   []BitExtent  // field 1, bits
	Puffs      []ByteExtent // field 2, stored in bits (×8)
	PuffLength uint64       // field 3
}

// Header is a decoded puffin patch header (puffin.metadata.PatchHeader).
type Header struct {
	Version  int32 // field 1 (1)
	Src, Dst StreamInfo
	Type     PatchType // field 4
	// InnerOffset is where the inner patch starts in the patch.
	InnerOffset int
}

func patchErr(format string, args ...any) error {
	return fmt.Errorf("puffin: patch: %s: %w", fmt.Sprintf(format, args...), ErrCorrupt)
}

// ParseHeader decodes the container and PatchHeader of patch.
func ParseHeader(patch []byte) (*Header, error) {
	if len(patch) < 8 || string(patch[:4]) != Magic {
		return nil, patchErr("no %q magic", Magic)
	}
	n := binary.BigEndian.Uint32(patch[4:])
	if uint64(n) > uint64(len(patch)-8) {
		return nil, patchErr("header of %d bytes in a %d-byte patch", n, len(patch))
	}
	h := &Header{InnerOffset: 8 + int(n)}
	b := patch[8 : 8+int(n)]
	err := walk(b, func(num protowire.Number, typ protowire.Type, v uint64, sub []byte) error {
		switch {
		case num == 1 && typ == protowire.VarintType:
			h.Version = int32(v)
		case num == 4 && typ == protowire.VarintType:
			h.Type = PatchType(int32(v))
		case (num == 2 || num == 3) && typ == protowire.BytesType:
			si := &h.Src
			if num == 3 {
				si = &h.Dst
			}
			return parseStreamInfo(sub, si)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return h, nil
}

// walk calls f for each field of a protobuf message.
func walk(b []byte, f func(num protowire.Number, typ protowire.Type, v uint64, sub []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return patchErr("bad protobuf tag")
		}
		b = b[n:]
		var v uint64
		var sub []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			sub, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return patchErr("bad protobuf field %d", num)
		}
		b = b[n:]
		if err := f(num, typ, v, sub); err != nil {
			return err
		}
	}
	return nil
}

func parseStreamInfo(b []byte, si *StreamInfo) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v uint64, sub []byte) error {
		switch {
		case num == 3 && typ == protowire.VarintType:
			si.PuffLength = v
		case (num == 1 || num == 2) && typ == protowire.BytesType:
			var off, length uint64
			if err := walk(sub, func(n protowire.Number, t protowire.Type, v uint64, _ []byte) error {
				if t == protowire.VarintType && n == 1 {
					off = v
				} else if t == protowire.VarintType && n == 2 {
					length = v
				}
				return nil
			}); err != nil {
				return err
			}
			if num == 1 {
				si.Deflates = append(si.Deflates, BitExtent{off, length})
			} else {
				si.Puffs = append(si.Puffs, ByteExtent{off / 8, length / 8})
			}
		}
		return nil
	})
}

func appendStreamInfo(b []byte, si *StreamInfo) []byte {
	ext := func(b []byte, num protowire.Number, off, length uint64) []byte {
		var m []byte
		if off != 0 {
			m = protowire.AppendTag(m, 1, protowire.VarintType)
			m = protowire.AppendVarint(m, off)
		}
		if length != 0 {
			m = protowire.AppendTag(m, 2, protowire.VarintType)
			m = protowire.AppendVarint(m, length)
		}
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendBytes(b, m)
	}
	for _, d := range si.Deflates {
		b = ext(b, 1, d.Offset, d.Length)
	}
	for _, p := range si.Puffs {
		b = ext(b, 2, p.Offset*8, p.Length*8)
	}
	if si.PuffLength != 0 {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, si.PuffLength)
	}
	return b
}

// Encode serializes the container and header (proto3, fields in order, zero
// values omitted, as AOSP's puffdiff writes them) followed by inner.
func (h *Header) Encode(inner []byte) []byte {
	var m []byte
	if h.Version != 0 {
		m = protowire.AppendTag(m, 1, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(int64(h.Version)))
	}
	for i, si := range []*StreamInfo{&h.Src, &h.Dst} {
		m = protowire.AppendTag(m, protowire.Number(2+i), protowire.BytesType)
		m = protowire.AppendBytes(m, appendStreamInfo(nil, si))
	}
	if h.Type != 0 {
		m = protowire.AppendTag(m, 4, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(int64(h.Type)))
	}
	out := make([]byte, 0, 8+len(m)+len(inner))
	out = append(out, Magic...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(m)))
	out = append(out, m...)
	return append(out, inner...)
}

// maxPuffExpansion bounds a puffed stream relative to the file it describes:
// a deflate bit expands to at most 2 puff bytes (a 258-byte match coded in
// 2 bits is 4 puff bytes).
const maxPuffExpansion = 16

// Apply applies a puffin patch to src and returns the new file, which must
// be dstSize bytes (dstSize < 0: any size up to maxDst).
func Apply(src, patch []byte, dstSize int64, maxDst int64) ([]byte, error) {
	h, err := ParseHeader(patch)
	if err != nil {
		return nil, err
	}
	switch h.Type {
	case PatchBsdiff:
	case PatchZucchini:
		return nil, fmt.Errorf("puffin: patch: inner patch type ZUCCHINI (PatchHeader.type 1) is not implemented: %w", ErrUnsupported)
	default:
		return nil, fmt.Errorf("puffin: patch: unknown inner patch type %d: %w", int32(h.Type), ErrUnsupported)
	}
	size, err := HuffedSize(h.Dst.Deflates, h.Dst.Puffs, h.Dst.PuffLength)
	if err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	if dstSize >= 0 && size != uint64(dstSize) {
		return nil, patchErr("patch makes %d bytes, the destination is %d", size, dstSize)
	}
	if dstSize < 0 && size > uint64(maxDst) {
		return nil, patchErr("patch makes %d bytes, more than the %d allowed", size, maxDst)
	}
	if h.Dst.PuffLength > size*maxPuffExpansion+1<<20 {
		return nil, patchErr("puffed destination of %d bytes for a %d-byte file", h.Dst.PuffLength, size)
	}
	if err := checkLayout(h.Dst.Deflates, h.Dst.Puffs, h.Dst.PuffLength, size); err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	if h.Src.PuffLength > uint64(len(src))*maxPuffExpansion+1<<20 {
		return nil, patchErr("puffed source of %d bytes for a %d-byte source", h.Src.PuffLength, len(src))
	}
	puffedSrc, _, err := puffStream(src, h.Src.Deflates, h.Src.Puffs, h.Src.PuffLength)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	inner := patch[h.InnerOffset:]
	ih, err := bspatch.ParseHeader(inner)
	if err != nil {
		return nil, err
	}
	if uint64(ih.NewSize) != h.Dst.PuffLength {
		return nil, patchErr("inner patch makes %d bytes, the puffed destination is %d", ih.NewSize, h.Dst.PuffLength)
	}
	// Grow no more than a patch of this size can plausibly need: bspatch
	// grows the buffer as it really produces output.
	var buf bytes.Buffer
	buf.Grow(int(min(uint64(ih.NewSize), 64<<20)))
	if err := bspatch.Apply(puffedSrc, inner, &buf); err != nil {
		return nil, err
	}
	out, err := HuffStream(buf.Bytes(), h.Dst.Deflates, h.Dst.Puffs)
	if err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	return out, nil
}

// DiffOptions tunes Diff.
type DiffOptions struct {
	// BrotliQuality for the BSDF2 streams (AOSP: 11); 0 means 9.
	BrotliQuality int
}

// Diff makes a puffin patch (inner BSDF2, bz2 or brotli per stream) turning
// src into dst, given the deflate extents of each (from Locate).
func Diff(src, dst []byte, srcDeflates, dstDeflates []BitExtent, opt DiffOptions) ([]byte, error) {
	ps, sp, err := PuffStream(src, srcDeflates)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	pd, dp, err := PuffStream(dst, dstDeflates)
	if err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	q := opt.BrotliQuality
	if q == 0 {
		q = 9
	}
	inner, _, err := bsdiff.Diff(ps, pd).EncodeSmallest(true, q)
	if err != nil {
		return nil, err
	}
	h := &Header{
		Version: 1,
		Src:     StreamInfo{Deflates: srcDeflates, Puffs: sp, PuffLength: uint64(len(ps))},
		Dst:     StreamInfo{Deflates: dstDeflates, Puffs: dp, PuffLength: uint64(len(pd))},
	}
	return h.Encode(inner), nil
}
