package bz2

import (
	"bytes"
	"compress/bzip2"
	"io"
	"math/rand/v2"
	"os/exec"
	"testing"

	"github.com/vabc-go/vabc/internal/testtool"
)

func decode(t *testing.T, b []byte) []byte {
	t.Helper()
	out, err := io.ReadAll(bzip2.NewReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatalf("compress/bzip2 rejects our stream: %v", err)
	}
	return out
}

func testInputs() map[string][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	rnd := make([]byte, 300000)
	for i := range rnd {
		rnd[i] = byte(r.Uint32())
	}
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog 0123456789\n"), 5000)
	runs := make([]byte, 0, 200000)
	for i := 0; len(runs) < 200000; i++ {
		runs = append(runs, bytes.Repeat([]byte{byte(i % 7)}, r.IntN(600))...)
	}
	skew := make([]byte, 120000)
	for i := range skew {
		skew[i] = byte(r.ExpFloat64() * 3)
	}
	return map[string][]byte{
		"empty":    {},
		"one":      {'x'},
		"periodic": bytes.Repeat([]byte("ab"), 1000),
		"zeros":    make([]byte, 1<<20),
		"random":   rnd,
		"text":     text,
		"runs":     runs,
		"skewed":   skew,
		"allbytes": func() []byte {
			b := make([]byte, 256*3)
			for i := range b {
				b[i] = byte(i)
			}
			return b
		}(),
		"fourrun": []byte("aaaabbbbbccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccd"),
	}
}

func TestRoundTrip(t *testing.T) {
	for name, in := range testInputs() {
		for _, level := range []int{1, 9} {
			t.Run(name, func(t *testing.T) {
				c, err := Compress(in, level)
				if err != nil {
					t.Fatal(err)
				}
				if got := decode(t, c); !bytes.Equal(got, in) {
					t.Fatalf("level %d: round trip mismatch (%d vs %d bytes)", level, len(got), len(in))
				}
				c2, _ := Compress(in, level)
				if !bytes.Equal(c, c2) {
					t.Fatal("output not deterministic")
				}
			})
		}
	}
}

func TestRatio(t *testing.T) {
	in := testInputs()["text"]
	c, _ := Compress(in, 9)
	if len(c) > len(in)/20 {
		t.Fatalf("repetitive text compressed to %d of %d bytes", len(c), len(in))
	}
}

// TestBzip2Tool checks the stream against the reference decoder when present.
func TestBzip2Tool(t *testing.T) {
	path := testtool.Need(t, "bzip2")
	for name, in := range testInputs() {
		t.Run(name, func(t *testing.T) {
			c, _ := Compress(in, 9)
			cmd := exec.Command(path, "-dc")
			cmd.Stdin = bytes.NewReader(c)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("bzip2 -d: %v", err)
			}
			if !bytes.Equal(out, in) {
				t.Fatal("bzip2 -d output differs")
			}
		})
	}
}

func FuzzCompress(f *testing.F) {
	f.Add([]byte("hello hello hello"))
	f.Add([]byte{0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := Compress(in, 1)
		if err != nil {
			t.Fatal(err)
		}
		if got := decode(t, c); !bytes.Equal(got, in) {
			t.Fatal("round trip mismatch")
		}
	})
}
