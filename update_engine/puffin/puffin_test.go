package puffin

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

// inflatePuff decompresses a puff stream: the check that the puffer read the
// deflate data right, not just consistently with the huffer.
func inflatePuff(b []byte) ([]byte, error) {
	var out []byte
	i := 0
	for i < len(b) {
		if len(b)-i < 2 {
			return nil, errors.New("short metadata")
		}
		n := int(b[i])<<8 | int(b[i+1]) + 1
		i += 2 + n
		for {
			if i >= len(b) {
				return nil, errors.New("no end of block")
			}
			c := b[i]
			if c < 0x80 {
				run, err := literalRun(b, &i)
				if err != nil {
					return nil, err
				}
				out = append(out, run...)
				continue
			}
			var length int
			if c == 0xFF {
				if b[i+1] == 129 {
					i += 2
					break
				}
				length = int(b[i+1]) + 130
				i += 2
			} else {
				length = int(c&0x7F) + 3
				i++
			}
			d := int(b[i])<<8 | int(b[i+1]) + 1
			i += 2
			if d > len(out) {
				return nil, fmt.Errorf("distance %d before %d bytes", d, len(out))
			}
			for k := 0; k < length; k++ {
				out = append(out, out[len(out)-d])
			}
		}
	}
	return out, nil
}

func TestAOSPVectors(t *testing.T) {
	for _, v := range smallVectors {
		t.Run(v.name, func(t *testing.T) {
			p, end, err := Puff(v.deflate, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p, v.puff) {
				t.Fatalf("puff\n got %x\nwant %x", p, v.puff)
			}
			if (end+7)/8 != uint64(len(v.deflate)) {
				t.Fatalf("puff ended at bit %d of %d bytes", end, len(v.deflate))
			}
			h, _, err := Huff(v.puff, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(h, v.deflate) {
				t.Fatalf("huff\n got %x\nwant %x", h, v.deflate)
			}
			raw, err := inflatePuff(p)
			if err != nil || string(raw) != v.raw {
				t.Fatalf("inflated puff %q, %v", raw, err)
			}
		})
	}
}

func TestAOSPGapVector(t *testing.T) {
	puffed, puffs, err := PuffStream(gapDeflates, gapDeflateExtents)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(puffed, gapPuffs) {
		t.Fatalf("puffed\n got %x\nwant %x", puffed, gapPuffs)
	}
	if fmt.Sprint(puffs) != fmt.Sprint(gapPuffExtents) {
		t.Fatalf("puffs %v, want %v", puffs, gapPuffExtents)
	}
	back, err := HuffStream(gapPuffs, gapDeflateExtents, gapPuffExtents)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, gapDeflates) {
		t.Fatalf("huffed\n got %x\nwant %x", back, gapDeflates)
	}
}

func TestPuffRejects(t *testing.T) {
	for _, c := range []struct {
		name string
		in   []byte
		want error
	}{
		{"bad LEN/NLEN", []byte{0x01, 0x05, 0x00, 0xFF, 0xFF, 0x01, 0x02, 0x03, 0x04, 0x05}, ErrCorrupt},
		{"block type 3", []byte{0x07, 0, 0, 0, 0, 0, 0, 0, 0}, ErrCorrupt},
		{"truncated fixed", []byte{0x63, 0x64, 0x62, 0x66, 0x61, 0x05}, ErrCorrupt},
		{"stored padding 0x3f", []byte{0x80, 0xFC, 0x00, 0x00, 0xFF, 0xFF}, ErrUnrepresentable},
		{"length 258 as 284+31", fixed284(), ErrUnrepresentable},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := uint64(0)
			if c.in[0] == 0x80 {
				start = 7
			}
			_, _, err := Puff(c.in, start)
			if !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
		})
	}
}

// roundTrip checks huff(puff(x)) == x for the deflate blocks of one raw
// deflate stream at the start of s (which may have trailing bytes) and that
// the puff inflates to raw (nil: not checked).
func roundTripStream(t *testing.T, name string, s, raw []byte) int {
	t.Helper()
	p, end, err := Puff(s, 0)
	if err != nil {
		// Puff reads blocks while 8 bits remain: cut the trailer first.
		t.Fatalf("%s: %v", name, err)
	}
	if (end+7)/8 != uint64(len(s)) {
		t.Fatalf("%s: stream of %d bytes ends at bit %d", name, len(s), end)
	}
	h, hend, err := Huff(p, 0)
	if err != nil {
		t.Fatalf("%s: huff: %v", name, err)
	}
	if hend != end || !bytes.Equal(h, s) {
		t.Fatalf("%s: huff(puff(x)) != x (%d bytes, end bit %d vs %d)", name, len(s), hend, end)
	}
	if raw != nil {
		got, err := inflatePuff(p)
		if err != nil || !bytes.Equal(got, raw) {
			t.Fatalf("%s: puff inflates to %d bytes (%v), want %d", name, len(got), err, len(raw))
		}
	}
	// And block by block through the puffed view.
	blocks, send, err := LocateStream(s, 0)
	if err != nil || send != end {
		t.Fatalf("%s: LocateStream: end %d, %v", name, send, err)
	}
	puffed, puffs, err := PuffStream(s, blocks)
	if err != nil {
		t.Fatalf("%s: PuffStream: %v", name, err)
	}
	back, err := HuffStream(puffed, blocks, puffs)
	if err != nil || !bytes.Equal(back, s) {
		t.Fatalf("%s: HuffStream: %v", name, err)
	}
	return 1
}

// corpus returns test inputs of many sizes and kinds of redundancy.
func corpus(n int) [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"the ", "android ", "update ", "engine ", "puff", "huff", "\n", "0123456789", "{\"k\": ", "}, "}
	var out [][]byte
	for i := range n {
		size := []int{0, 1, 2, 3, 17, 100, 300, 1000, 4000, 9000, 30000, 70000}[i%12]
		b := make([]byte, 0, size)
		switch i % 4 {
		case 0: // text
			for len(b) < size {
				b = append(b, words[rng.IntN(len(words))]...)
			}
		case 1: // random bytes
			for len(b) < size {
				b = append(b, byte(rng.Uint32()))
			}
		case 2: // runs
			for len(b) < size {
				c, r := byte(rng.IntN(4)), rng.IntN(300)+1
				for k := 0; k < r; k++ {
					b = append(b, c)
				}
			}
		default: // mostly text with noise
			for len(b) < size {
				if rng.IntN(10) == 0 {
					b = append(b, byte(rng.Uint32()))
				} else {
					b = append(b, words[rng.IntN(len(words))]...)
				}
			}
		}
		out = append(out, b[:min(len(b), size)])
	}
	return out
}

func TestRoundTripGoFlate(t *testing.T) {
	n := 0
	for i, in := range corpus(48) {
		for level := -2; level <= 9; level++ {
			var buf bytes.Buffer
			w, _ := flate.NewWriter(&buf, level)
			w.Write(in)
			w.Close()
			n += roundTripStream(t, fmt.Sprintf("input %d level %d", i, level), buf.Bytes(), in)
		}
		// A flushed stream: empty stored blocks between compressed ones.
		var buf bytes.Buffer
		w, _ := flate.NewWriter(&buf, 6)
		for k := 0; k < len(in); k += 1000 {
			w.Write(in[k:min(k+1000, len(in))])
			w.Flush()
		}
		w.Close()
		n += roundTripStream(t, fmt.Sprintf("input %d flushed", i), buf.Bytes(), in)
		r := flate.NewReader(bytes.NewReader(buf.Bytes()))
		if got, _ := io.ReadAll(r); !bytes.Equal(got, in) {
			t.Fatal("flate mismatch")
		}
	}
	t.Logf("%d Go compress/flate streams", n)
}

func TestRoundTripShifted(t *testing.T) {
	// The same streams at every bit offset, with raw bits around them.
	for i, in := range corpus(12) {
		var buf bytes.Buffer
		w, _ := flate.NewWriter(&buf, 9)
		w.Write(in)
		w.Close()
		s := buf.Bytes()
		if hasStored(s) {
			continue // a stored block's LEN is byte aligned: shifting changes the stream
		}
		for shift := uint(0); shift < 8; shift++ {
			data := make([]byte, len(s)+3)
			data[0] = 0xA5 & byte(1<<shift-1)
			for k, c := range s {
				data[k] |= c << shift
				data[k+1] |= byte(uint16(c) >> (8 - shift))
			}
			// raw bits after the stream
			blocks, end, err := LocateStream(data, uint64(shift))
			if err != nil {
				t.Fatalf("input %d shift %d: %v", i, shift, err)
			}
			data[end/8] |= 0xC0 & ^byte(1<<(end&7)-1)
			data[len(data)-1] = 0x5A
			puffed, puffs, err := PuffStream(data, blocks)
			if err != nil {
				t.Fatalf("input %d shift %d: %v", i, shift, err)
			}
			back, err := HuffStream(puffed, blocks, puffs)
			if err != nil || !bytes.Equal(back, data) {
				t.Fatalf("input %d shift %d: huff stream differs (%v)", i, shift, err)
			}
		}
	}
}

func hasStored(s []byte) bool {
	var p puffer
	r := newBitReader(s, 0)
	for {
		at := r.pos
		final, err := p.block(r, &puffWriter{})
		if err != nil || isStored(s, at) {
			return true
		}
		if final {
			return false
		}
	}
}

// fixed284 is a fixed block: literal 'a', then length 258 coded as symbol
// 284 with extra bits 31, distance 1, end of block.
func fixed284() []byte {
	out := make([]byte, 16)
	w := newBitWriter(out, 0, len(out))
	w.bits(1, 1)
	w.bits(2, 1)
	fixedLit.write(w, 'a')
	fixedLit.write(w, 284)
	w.bits(5, 31)
	fixedDist.write(w, 0)
	fixedLit.write(w, 256)
	w.flush()
	return out[:(w.pos()+7)/8]
}
