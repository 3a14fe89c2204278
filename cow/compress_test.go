package cow

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var allCompressions = []Compression{
	CompressionNone, CompressionGz, CompressionBrotli, CompressionLz4,
	CompressionZstd, CompressionSnappy, CompressionXz,
}

// testUnit returns n bytes of moderately compressible data: runs of text,
// counters and random bytes, like a mix of code and data.
func testUnit(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 42))
	b := make([]byte, 0, n)
	for len(b) < n {
		switch r.IntN(3) {
		case 0:
			b = append(b, "the quick brown fox jumps over the lazy dog "...)
		case 1:
			b = binary.LittleEndian.AppendUint32(b, uint32(len(b)))
		default:
			for range 16 {
				b = append(b, byte(r.Uint32()))
			}
		}
	}
	return b[:n]
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestCompressRoundTrip(t *testing.T) {
	for _, alg := range allCompressions {
		for _, unit := range []int{4096, 65536, 262144} {
			if unit > 65536 && (alg == CompressionBrotli || alg == CompressionXz) {
				continue // slow at default level; the format does not change
			}
			t.Run(alg.String()+"/"+itoa(unit), func(t *testing.T) {
				c, err := NewCompressor(alg, DefaultLevel(alg), unit)
				if err != nil {
					t.Fatal(err)
				}
				for i, src := range [][]byte{testUnit(1, unit), make([]byte, unit), randomBytes(3, unit)} {
					prefix := []byte("prefix")
					out, err := c.Compress(append([]byte(nil), prefix...), src)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.HasPrefix(out, prefix) {
						t.Fatalf("case %d: Compress did not append", i)
					}
					enc := out[len(prefix):]
					dst := make([]byte, unit)
					n, err := Decompress(alg, dst, enc)
					if err != nil {
						t.Fatalf("case %d: Decompress: %v", i, err)
					}
					if n != unit || !bytes.Equal(dst, src) {
						t.Fatalf("case %d: round trip mismatch (n=%d)", i, n)
					}
					if i == 1 && alg != CompressionNone && len(enc) > unit/8 {
						t.Errorf("zero unit compressed to %d bytes", len(enc))
					}
				}
			})
		}
	}
}

func itoa(n int) string {
	switch {
	case n >= 1<<10 && n%(1<<10) == 0:
		return formatUint(uint64(n>>10)) + "K"
	}
	return formatUint(uint64(n))
}

func formatUint(n uint64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

// TestZstdFrameWindow checks the frame layout AOSP produces with
// windowLog = log2(unit): a single-segment frame (no window descriptor)
// whose content size is the unit size, decodable with a window of that size.
func TestZstdFrameWindow(t *testing.T) {
	for _, unit := range []int{4096, 8192, 65536, 262144} {
		c, err := NewCompressor(CompressionZstd, 3, unit)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := c.Compress(nil, testUnit(9, unit))
		if err != nil {
			t.Fatal(err)
		}
		if binary.LittleEndian.Uint32(enc) != 0xFD2FB528 {
			t.Fatalf("unit %d: bad zstd magic", unit)
		}
		fhd := enc[4]
		if fhd&0x20 == 0 {
			t.Errorf("unit %d: frame is not single-segment (descriptor %#x)", unit, fhd)
		}
		if fhd&0x04 != 0 {
			t.Errorf("unit %d: frame has a checksum; ZSTD_compress2 default has none", unit)
		}
		// FCS field size from the flag (single segment: 0 → 1 byte).
		var fcs uint64
		switch fhd >> 6 {
		case 0:
			fcs = uint64(enc[5])
		case 1:
			fcs = uint64(binary.LittleEndian.Uint16(enc[5:])) + 256
		case 2:
			fcs = uint64(binary.LittleEndian.Uint32(enc[5:]))
		}
		if fcs != uint64(unit) {
			t.Errorf("unit %d: frame content size %d", unit, fcs)
		}
	}
}

func TestDecompressExactSize(t *testing.T) {
	src := testUnit(5, 8192)
	for _, alg := range allCompressions {
		t.Run(alg.String(), func(t *testing.T) {
			c, err := NewCompressor(alg, DefaultLevel(alg), 8192)
			if err != nil {
				t.Fatal(err)
			}
			enc, err := c.Compress(nil, src)
			if err != nil {
				t.Fatal(err)
			}
			// Smaller destination: streaming codecs fill it; block codecs fail.
			small := make([]byte, 4096)
			n, err := Decompress(alg, small, enc)
			switch alg {
			case CompressionGz, CompressionBrotli:
				if err != nil || n != 4096 || !bytes.Equal(small, src[:4096]) {
					t.Errorf("streaming partial decode: n=%d err=%v", n, err)
				}
			default:
				if err == nil {
					t.Errorf("decode into a too-small buffer succeeded (n=%d)", n)
				}
			}
			// Larger destination: streaming codecs return the short count.
			big := make([]byte, 16384)
			n, err = Decompress(alg, big, enc)
			switch alg {
			case CompressionGz, CompressionBrotli:
				if err != nil || n != 8192 {
					t.Errorf("streaming decode into larger buffer: n=%d err=%v", n, err)
				}
			default:
				if err == nil {
					t.Errorf("decode into a too-large buffer succeeded (n=%d)", n)
				}
			}
			// Corruption: truncated payloads never succeed silently.
			if alg != CompressionNone {
				dst := make([]byte, 8192)
				n, err := Decompress(alg, dst, enc[:len(enc)/2])
				if err == nil && n == len(dst) {
					t.Errorf("truncated payload decoded fully")
				}
				if err != nil && !errors.Is(err, ErrCorrupt) {
					t.Errorf("error %v is not ErrCorrupt", err)
				}
			}
		})
	}
}

func TestParseCompressionOption(t *testing.T) {
	tests := []struct {
		in      string
		alg     Compression
		level   int
		wantErr bool
	}{
		{"", CompressionNone, 0, false},
		{"none", CompressionNone, 0, false},
		{"gz", CompressionGz, 9, false},
		{"gz,1", CompressionGz, 1, false},
		{"gz,10", 0, 0, true},
		{"brotli", CompressionBrotli, 11, false},
		{"brotli,5", CompressionBrotli, 5, false},
		{"lz4", CompressionLz4, 0, false},
		{"zstd", CompressionZstd, 3, false},
		{"zstd,-5", CompressionZstd, -5, false},
		{"zstd,19", CompressionZstd, 19, false},
		{"zstd,x", 0, 0, true},
		{"snappy", CompressionSnappy, 0, false},
		{"xz", CompressionXz, 0, false},
		{"lzma", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			alg, level, err := ParseCompressionOption(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && (alg != tt.alg || level != tt.level) {
				t.Fatalf("got %v,%d want %v,%d", alg, level, tt.alg, tt.level)
			}
		})
	}
}

func TestDecompressUnknown(t *testing.T) {
	if _, err := Decompress(Compression(9), make([]byte, 4), []byte{1}); !errors.Is(err, ErrAlgorithm) {
		t.Fatalf("err = %v", err)
	}
	if _, err := NewCompressor(Compression(9), 0, 4096); !errors.Is(err, ErrAlgorithm) {
		t.Fatalf("err = %v", err)
	}
	if _, err := NewCompressor(CompressionZstd, 3, 5000); err == nil {
		t.Fatal("non-power-of-two unit accepted")
	}
}

func TestXzRejectsHugeDictionary(t *testing.T) {
	c, err := NewCompressor(CompressionXz, 0, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := c.Compress(nil, testUnit(1, 4096))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decompress(CompressionXz, make([]byte, 4096), enc); err == nil {
		t.Fatal("64 MiB dictionary accepted for a 4 KiB unit")
	}
}

// codecSeed is one fuzz seed: a compressed unit and its decoded size.
type codecSeed struct {
	enc  []byte
	size uint32
}

// codecSeeds returns the seeds of a decompressor fuzz target: compressible,
// zero and incompressible units at 4 KiB, and a compressible 64 KiB unit.
func codecSeeds(tb testing.TB, alg Compression) []codecSeed {
	var out []codecSeed
	for _, in := range []struct {
		unit int
		src  []byte
	}{
		{4096, testUnit(1, 4096)}, {4096, make([]byte, 4096)}, {4096, randomBytes(2, 4096)},
		{65536, testUnit(3, 65536)},
	} {
		level := DefaultLevel(alg)
		if alg == CompressionBrotli {
			level = 6 // quality 11 takes seconds on 64 KiB; same format
		}
		c, err := NewCompressor(alg, level, in.unit)
		if err != nil {
			tb.Fatal(err)
		}
		enc, err := c.Compress(nil, in.src)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, codecSeed{enc, uint32(len(in.src))})
	}
	return out
}

var rewriteCodecSeeds = flag.Bool("rewrite-codec-seeds", false, "rewrite testdata/fuzz/FuzzDecompress*")

// TestCodecSeedsUpToDate keeps testdata/fuzz/FuzzDecompress*/seed-* equal
// to codecSeeds (rewrite with go test ./cow -run CodecSeeds -rewrite-codec-seeds).
func TestCodecSeedsUpToDate(t *testing.T) {
	for _, alg := range allCompressions[1:] {
		dir := filepath.Join("testdata", "fuzz", "FuzzDecompress"+strings.ToUpper(alg.String()[:1])+alg.String()[1:])
		for i, s := range codecSeeds(t, alg) {
			e := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nuint32(%d)\n", s.enc, s.size)
			p := filepath.Join(dir, fmt.Sprintf("seed-%d", i))
			if *rewriteCodecSeeds {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(e), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := os.ReadFile(p)
			if err != nil || string(got) != e {
				t.Errorf("%s missing or stale (-rewrite-codec-seeds): %v", p, err)
			}
		}
	}
}

// fuzzDecompress is shared by the per-codec fuzz targets: any input may be
// rejected, none may panic, hang, overrun dst or claim more than len(dst).
func fuzzDecompress(f *testing.F, alg Compression) {
	for _, s := range codecSeeds(f, alg) {
		f.Add(s.enc, s.size)
	}
	f.Add([]byte{}, uint32(4096))
	f.Fuzz(func(t *testing.T, src []byte, size uint32) {
		size %= MaxCompressionSize + 1
		if size == 0 {
			size = 1
		}
		dst := make([]byte, size)
		n, err := Decompress(alg, dst, src)
		if n < 0 || n > len(dst) {
			t.Fatalf("n = %d for dst of %d", n, len(dst))
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		// Whatever decoded must re-encode and decode to the same bytes
		// (at the fastest level: quality 11 brotli takes seconds per unit).
		c, cerr := NewCompressor(alg, fastLevel(alg), 1<<log2(uint64(nextPow2(n))))
		if cerr != nil {
			t.Fatal(cerr)
		}
		enc, cerr := c.Compress(nil, dst[:n])
		if cerr != nil {
			t.Fatal(cerr)
		}
		back := make([]byte, n)
		if m, err := Decompress(alg, back, enc); (err != nil || m != n || !bytes.Equal(back, dst[:n])) && n > 0 {
			t.Fatalf("re-encode round trip failed: m=%d err=%v", m, err)
		}
	})
}

func fastLevel(alg Compression) int {
	switch alg {
	case CompressionGz, CompressionBrotli, CompressionZstd:
		return 1
	}
	return 0
}

func nextPow2(n int) int {
	p := 1
	for p < n {
		p <<= 1
	}
	return p
}

func FuzzDecompressGz(f *testing.F)     { fuzzDecompress(f, CompressionGz) }
func FuzzDecompressBrotli(f *testing.F) { fuzzDecompress(f, CompressionBrotli) }
func FuzzDecompressLz4(f *testing.F)    { fuzzDecompress(f, CompressionLz4) }
func FuzzDecompressZstd(f *testing.F)   { fuzzDecompress(f, CompressionZstd) }
func FuzzDecompressSnappy(f *testing.F) { fuzzDecompress(f, CompressionSnappy) }
func FuzzDecompressXz(f *testing.F)     { fuzzDecompress(f, CompressionXz) }
