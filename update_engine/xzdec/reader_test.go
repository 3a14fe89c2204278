package xzdec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vabc-go/vabc/internal/testtool"
)

// sampleData looks like code: random bytes with many E8/E9/BL/ADRP-like
// patterns, plus a real binary if one is at hand.
func sampleData(n int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		switch rng.IntN(10) {
		case 0:
			b[i] = 0xE8
		case 1:
			b[i] = 0xEB
		case 2:
			b[i] = 0xFF
		case 3:
			b[i] = 0
		case 4:
			b[i] = 0xF0 | byte(rng.IntN(16))
		default:
			b[i] = byte(rng.IntN(256))
		}
	}
	for _, lib := range []string{"/usr/bin/xz"} {
		if exe, err := os.ReadFile(lib); err == nil {
			b = append(b, exe...)
		}
	}
	return b
}

func xzCompress(t testing.TB, data []byte, args ...string) []byte {
	t.Helper()
	testtool.Need(t, "xz")
	cmd := exec.Command("xz", append([]string{"-c", "-T1", "-1"}, args...)...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz %v: %v", args, err)
	}
	return out
}

func TestDecodeAgainstXZ(t *testing.T) {
	data := sampleData(160 << 10)
	tests := []struct {
		name string
		args []string
	}{
		{"lzma2-crc32", []string{"--check=crc32"}},
		{"lzma2-none", []string{"--check=none", "-0"}},
		{"lzma2-crc64", []string{"--check=crc64"}},
		{"lzma2-sha256", []string{"--check=sha256"}},
		{"x86", []string{"--x86", "--lzma2=preset=1", "--check=crc32"}},
		{"x86-start", []string{"--x86=start=4096", "--lzma2", "--check=none"}},
		{"arm", []string{"--arm", "--lzma2"}},
		{"armthumb", []string{"--armthumb", "--lzma2"}},
		{"arm64", []string{"--arm64", "--lzma2"}},
		{"powerpc", []string{"--powerpc", "--lzma2"}},
		{"sparc", []string{"--sparc", "--lzma2"}},
		{"ia64", []string{"--ia64", "--lzma2"}},
		{"delta", []string{"--delta=dist=4", "--lzma2"}},
		{"x86+delta", []string{"--x86", "--delta=dist=2", "--lzma2"}},
		{"blocks", []string{"--block-size=100000", "--check=crc64"}},
		{"lc0-lp2-pb0", []string{"--lzma2=preset=1,lc=0,lp=2,pb=0"}},
		{"lc4-pb4", []string{"--lzma2=preset=1,lc=4,lp=0,pb=4"}},
		{"lc1-lp3", []string{"--lzma2=preset=1,lc=1,lp=3,pb=2"}},
		{"small-dict-slides", []string{"--lzma2=preset=1,dict=4KiB"}},
		{"dict-64k", []string{"--lzma2=preset=1,dict=64KiB", "--check=sha256"}},
		{"block-list-sizes", []string{"-T2", "--block-size=150000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			comp := xzCompress(t, data, tt.args...)
			got, err := Decode(comp) // WriteTo
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("decoded %d bytes differ from the %d-byte input", len(got), len(data))
			}
			got, err = readAll(comp, 1000) // Read, small buffers
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("Read: decoded %d bytes differ from the %d-byte input", len(got), len(data))
			}
		})
	}
}

// readAll decodes data with Read calls of n bytes only (no WriteTo).
func readAll(data []byte, n int) ([]byte, error) {
	r, err := NewReader(data)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	buf := make([]byte, n)
	for {
		k, err := r.Read(buf)
		out.Write(buf[:k])
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
	}
}

// TestIncompressible makes xz emit uncompressed LZMA2 chunks between
// compressed ones.
func TestIncompressible(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var data []byte
	for i := 0; i < 6; i++ {
		r := make([]byte, 150000)
		for j := range r {
			r[j] = byte(rng.Uint32())
		}
		data = append(data, r...)
		data = append(data, bytes.Repeat([]byte("compressible "), 10000)...)
	}
	for _, args := range [][]string{{"--check=crc32"}, {"--x86", "--lzma2=dict=8KiB"}} {
		got, err := Decode(xzCompress(t, data, args...))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%v: output differs", args)
		}
	}
}

func TestConcatenatedAndPadded(t *testing.T) {
	a, b := []byte("first stream "), bytes.Repeat([]byte("second "), 1000)
	ca := xzCompress(t, a)
	cb := xzCompress(t, b, "--x86", "--lzma2")
	in := append(append(append([]byte{}, ca...), 0, 0, 0, 0, 0, 0, 0, 0), cb...)
	got, err := Decode(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(append([]byte{}, a...), b...); !bytes.Equal(got, want) {
		t.Fatal("concatenation decoded wrong")
	}
}

func TestCorrupt(t *testing.T) {
	data := sampleData(200 << 10)
	good := xzCompress(t, data, "--x86", "--lzma2", "--check=crc32")
	flip := func(i int) []byte {
		b := append([]byte{}, good...)
		b[i] ^= 0x40
		return b
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrCorrupt},
		{"magic", flip(1), ErrCorrupt},
		{"header-crc", flip(9), ErrCorrupt},
		{"block-header", flip(13), ErrCorrupt},
		{"payload-middle", flip(len(good) / 2), ErrCorrupt},
		{"check", flip(len(good) - 40), ErrCorrupt},
		{"footer", flip(len(good) - 2), ErrCorrupt},
		{"truncated", good[:len(good)-13], ErrCorrupt},
		{"truncated-half", good[:len(good)/2], ErrCorrupt},
		{"trailing-garbage", append(append([]byte{}, good...), 1, 2, 3, 4), ErrCorrupt},
		{"riscv-filter", withFilterID(xzCompress(t, data[:1000], "--x86", "--lzma2"), idX86, idRISCV), ErrUnsupported},
		{"check-type-crc64-flag", func() []byte {
			b := xzCompress(t, []byte("x"), "--check=none")
			b[7] = 2 // reserved check id 2 with a fixed CRC
			return b
		}(), ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.in)
			if err == nil {
				t.Fatalf("no error, %d bytes", len(got))
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
}

// withFilterID rewrites the first filter id of the first block header and
// fixes the header CRC32, to make streams with filters xz 5.4 cannot write.
func withFilterID(b []byte, from, to byte) []byte {
	b = append([]byte{}, b...)
	hs := (int(b[12]) + 1) * 4
	h := b[12 : 12+hs]
	if h[2] != from {
		panic("unexpected block header layout")
	}
	h[2] = to
	binary.LittleEndian.PutUint32(h[hs-4:], crc32.ChecksumIEEE(h[:hs-4]))
	return b
}

// TestWriteFuzzSeeds keeps small real streams in the fuzz corpus.
func TestFuzzSeedsPresent(t *testing.T) {
	m, _ := filepath.Glob("testdata/fuzz/FuzzDecode/*")
	if len(m) == 0 {
		t.Skip("no committed seeds")
	}
}
