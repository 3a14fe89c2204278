package liblz4

import (
	"bytes"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/pierrec/lz4/v4"
	"github.com/vabc-go/vabc/update_engine/liblz4/lz4ref"
)

// optInputs: inputs of 0…64 KiB of several kinds, for the levels of the
// optimal parser.
func optInputs(t testing.TB) [][]byte {
	rng := rand.New(rand.NewPCG(11, 12))
	exe, err := os.ReadFile("/proc/self/exe") // an ELF: the test binary
	if err != nil {
		t.Fatal(err)
	}
	words := []string{"erofs ", "lz4 ", "block ", "android ", "system/", "lib64/", ".so\x00", "\n", "0123456789abcdef"}
	sizes := []int{0, 1, 4, 11, 12, 13, 14, 17, 18, 19, 20, 31, 64, 100, 255, 256, 300, 1000, 4095, 4096, 4097, 8192, 20000, 32768, 65535, 65536}
	var out [][]byte
	for k := range 7 {
		for i, size := range sizes {
			b := make([]byte, 0, size+64)
			switch k {
			case 0: // random bytes
				for len(b) < size {
					b = append(b, byte(rng.Uint32()))
				}
			case 1: // text
				for len(b) < size {
					b = append(b, words[rng.IntN(len(words))]...)
				}
			case 2: // an ELF chunk
				off := rng.IntN(max(1, len(exe)-size))
				b = append(b, exe[off:min(len(exe), off+size)]...)
			case 3: // runs of one byte
				for len(b) < size {
					c := byte(rng.IntN(3))
					for n := rng.IntN(300); n > 0; n-- {
						b = append(b, c)
					}
					b = append(b, byte(rng.Uint32()))
				}
			case 4: // short periodic patterns (the pattern analysis)
				pat := []byte("abcabcabXY")[:1+i%4]
				for len(b) < size {
					for n := rng.IntN(2000); n > 0; n-- {
						b = append(b, pat...)
					}
					b = append(b, byte(rng.Uint32()))
				}
			case 5: // long repeats of a random block, with edits
				blk := make([]byte, 1+rng.IntN(5000))
				for j := range blk {
					blk[j] = byte(rng.Uint32())
				}
				for len(b) < size {
					b = append(b, blk[:rng.IntN(len(blk)+1)]...)
					b = append(b, byte(rng.Uint32()))
				}
			default: // zeros
				b = append(b, make([]byte, size)...)
			}
			out = append(out, b[:size])
		}
	}
	return out
}

func TestOptimalLevelsMatchLiblz4(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	var cases []lz4ref.Case
	for _, in := range optInputs(t) {
		bound := CompressBound(len(in))
		for _, level := range []int{10, 11, 12} {
			targets := []int{1, 2, 5, 6, 13, 16, 17, 20, 64, 100, 512, 4096, bound - 1, bound, bound + 100}
			for range 4 {
				targets = append(targets, 1+rng.IntN(bound+1))
			}
			for _, target := range targets {
				cases = append(cases, lz4ref.Case{Level: level, Target: target, Src: in})
			}
		}
	}
	check(t, cases)
}

func check(t *testing.T, cases []lz4ref.Case) {
	blocks, consumed := lz4ref.Run(t, cases)
	bad := 0
	for i, c := range cases {
		var got []byte
		var n int
		if c.Normal {
			got = CompressHC(c.Src, c.Target, c.Level)
			if got != nil {
				n = len(c.Src)
			}
		} else {
			got, n = CompressHCDestSize(c.Src, c.Target, c.Level)
		}
		if n != consumed[i] || !bytes.Equal(got, blocks[i]) {
			bad++
			if bad < 6 {
				t.Errorf("case %d (level %d, normal %v, %d bytes into %d): Go consumed %d into %d bytes, liblz4 %d into %d (first diff at %s)",
					i, c.Level, c.Normal, len(c.Src), c.Target, n, len(got), consumed[i], len(blocks[i]), firstDiff(got, blocks[i]))
			}
			continue
		}
		dec := make([]byte, n)
		if m, err := lz4.UncompressBlock(got, dec); n > 0 && (err != nil || m != n || !bytes.Equal(dec, c.Src[:n])) {
			t.Fatalf("case %d: block does not decode to the consumed input: %d, %v", i, m, err)
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d cases differ", bad, len(cases))
	}
	t.Logf("%d cases identical to liblz4", len(cases))
}

