package cow

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// TestRecordSizes checks that every on-disk record encodes to exactly its
// documented size (§1–§3, §5) and that decode(encode(x)) == x.
func TestRecordSizes(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	u64 := func() uint64 { return rng.Uint64() }
	u32 := func() uint32 { return rng.Uint32() }
	u16 := func() uint16 { return uint16(rng.Uint32()) }

	randHeader := func(size uint16) Header {
		h := Header{Magic: Magic, MajorVersion: u16(), MinorVersion: u16(), HeaderSize: size,
			FooterSize: u16(), OpSize: u16(), BlockSize: u32(), ClusterOps: u32(), NumMergeOps: u64()}
		if size >= HeaderV2Size {
			h.BufferSize = u32()
		}
		if size == HeaderV3Size {
			h.SequenceDataCount, h.ResumePointCount, h.ResumePointMax = u64(), u32(), u32()
			h.OpCount, h.OpCountMax = u64(), u64()
			h.CompressionAlgorithm, h.MaxCompressionSize = Compression(u32()), u32()
		}
		return h
	}
	for _, size := range []uint16{HeaderV1Size, HeaderV2Size, HeaderV3Size} {
		for range 50 {
			h := randHeader(size)
			b, err := h.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != int(size) {
				t.Fatalf("header v(size %d) encodes to %d bytes", size, len(b))
			}
			got, err := ReadHeader(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if got != h {
				t.Fatalf("header round trip:\n got %+v\nwant %+v", got, h)
			}
		}
	}
	// Field offsets named in the spec.
	h := randHeader(HeaderV3Size)
	b, _ := h.MarshalBinary()
	le := binary.LittleEndian
	if le.Uint64(b[0:]) != Magic || le.Uint64(b[OffsetNumMergeOps:]) != h.NumMergeOps ||
		le.Uint32(b[OffsetBufferSize:]) != h.BufferSize || le.Uint64(b[54:]) != h.OpCount ||
		le.Uint32(b[74:]) != h.MaxCompressionSize {
		t.Fatal("header field offsets")
	}
	if !bytes.Equal(b[:8], []byte("!!WOcwoC")) {
		t.Fatalf("magic bytes %q", b[:8])
	}

	for range 200 {
		o := Op{Type: OpType(rng.Uint32()), Compression: Compression(rng.Uint32() & 0xff),
			DataLength: u32() & 0xffff, NewBlock: u64(), Source: u64()}
		e := AppendOpV2(nil, o)
		if len(e) != OpV2Size {
			t.Fatalf("v2 op %d bytes", len(e))
		}
		if got := DecodeOpV2(e); got != o {
			t.Fatalf("v2 op round trip %v != %v", got, o)
		}
		o3 := Op{Type: OpType(rng.IntN(16)), DataLength: u32(), NewBlock: uint64(u32()),
			Source: u64() & MaxSource, FactorShift: uint8(rng.IntN(8))}
		e = AppendOpV3(nil, o3)
		if len(e) != OpV3Size {
			t.Fatalf("v3 op %d bytes", len(e))
		}
		if got := DecodeOpV3(e); got != o3 {
			t.Fatalf("v3 op round trip %v != %v", got, o3)
		}

		f := Footer{OpsSize: u64(), NumOps: u64()}
		for i := range f.Unused {
			f.Unused[i] = byte(rng.Uint32())
		}
		e = AppendFooter(nil, f)
		if len(e) != FooterSize || OpType(e[0]) != OpFooter || le.Uint16(e[2:]) != FooterDataSize ||
			le.Uint64(e[4:]) != f.OpsSize || le.Uint64(e[12:]) != f.NumOps {
			t.Fatalf("footer encoding % x", e[:20])
		}
		if got := DecodeFooter(e); got != f {
			t.Fatal("footer round trip")
		}

		rp := ResumePoint{Label: u64(), OpIndex: u64()}
		e = AppendResumePoint(nil, rp)
		if len(e) != ResumePointSize || DecodeResumePoint(e) != rp {
			t.Fatal("resume point")
		}
		se := ScratchEntry{NewBlock: u64(), FileOffset: u64()}
		e = AppendScratchEntry(nil, se)
		if len(e) != ScratchEntrySize || DecodeScratchEntry(e) != se {
			t.Fatal("scratch entry")
		}
	}

	// v3 source_info bit layout: type in 60–63, factor in 57–59, source in 0–47.
	e := AppendOpV3(nil, Op{Type: OpXor, DataLength: 1, NewBlock: 2, Source: 3, FactorShift: 5})
	if si := le.Uint64(e[8:]); si != 6<<60|5<<57|3 {
		t.Fatalf("source_info %#x", si)
	}
}

// TestScratchLayout checks the 2 MiB scratch region split (§5).
func TestScratchLayout(t *testing.T) {
	h := hdrV2(0, BufferRegionDefaultSize)
	s, ok := h.Scratch()
	if !ok || s.StateOffset != 38 || s.MetadataOffset != 39 || s.MetadataSize != 8192 ||
		s.DataOffset != 38+8192 || s.DataBlocks != 510 {
		t.Fatalf("%+v %v", s, ok)
	}
	if h1 := hdrV1(0); func() bool { _, ok := h1.Scratch(); return ok }() {
		t.Fatal("v1 has no scratch")
	}
}
