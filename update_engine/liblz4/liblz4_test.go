package liblz4

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/pierrec/lz4/v4"
	"github.com/vabc-go/vabc/update_engine/liblz4/lz4ref"
)

func reference(t *testing.T, cases []lz4ref.Case) ([][]byte, []int) {
	t.Helper()
	return lz4ref.Run(t, cases)
}

type refCase = lz4ref.Case

func inputs() [][]byte {
	rng := rand.New(rand.NewPCG(7, 9))
	words := []string{"erofs ", "lz4 ", "block ", "android ", "\x00\x00\x00\x00", "0123456789abcdef", "\n"}
	var out [][]byte
	for i := range 60 {
		size := []int{0, 1, 5, 12, 13, 14, 100, 1000, 4096, 20000, 65546, 65547, 70000, 200000}[i%14]
		b := make([]byte, 0, size)
		for len(b) < size {
			switch (i / 14) % 4 {
			case 0:
				b = append(b, words[rng.IntN(len(words))]...)
			case 1:
				b = append(b, byte(rng.Uint32()))
			case 2:
				for k := rng.IntN(100); k > 0; k-- {
					b = append(b, byte(i))
				}
				b = append(b, byte(rng.Uint32()))
			default:
				if rng.IntN(8) == 0 {
					b = append(b, byte(rng.Uint32()))
				} else {
					b = append(b, words[rng.IntN(len(words))]...)
				}
			}
		}
		out = append(out, b[:size])
	}
	return out
}

func TestCompressDestSizeMatchesLiblz4(t *testing.T) {
	var cases []refCase
	rng := rand.New(rand.NewPCG(3, 4))
	for _, in := range inputs() {
		targets := []int{1, 2, 16, 100, 1000, 4096, 8192, CompressBound(len(in)), CompressBound(len(in)) - 1}
		for range 8 {
			targets = append(targets, 1+rng.IntN(CompressBound(len(in))))
		}
		for _, target := range targets {
			cases = append(cases, refCase{Level: 0, Target: target, Src: in})
		}
	}
	blocks, consumed := reference(t, cases)
	for i, c := range cases {
		got, n := CompressDestSize(c.Src, c.Target)
		if n != consumed[i] || !bytes.Equal(got, blocks[i]) {
			t.Fatalf("case %d (%d bytes into %d): Go consumed %d into %d bytes, liblz4 %d into %d (first diff at %s)",
				i, len(c.Src), c.Target, n, len(got), consumed[i], len(blocks[i]), firstDiff(got, blocks[i]))
		}
		// and it decodes
		dec := make([]byte, n)
		if m, err := lz4.UncompressBlock(got, dec); err != nil || m != n || !bytes.Equal(dec, c.Src[:n]) {
			t.Fatalf("case %d: block does not decode to the consumed input: %d, %v", i, m, err)
		}
	}
	t.Logf("%d LZ4_compress_destSize cases identical to liblz4", len(cases))
}

func firstDiff(a, b []byte) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprint(i)
		}
	}
	return fmt.Sprint(min(len(a), len(b)))
}

func TestCompressHCDestSizeMatchesLiblz4(t *testing.T) {
	var cases []refCase
	rng := rand.New(rand.NewPCG(5, 6))
	for i, in := range inputs() {
		if len(in) > 100000 && i%3 != 0 {
			continue // keep the test fast
		}
		for _, level := range []int{1, 3, 6, 9} {
			if i%2 == 1 && level != 9 && level != 3 {
				continue
			}
			targets := []int{1, 16, 100, 4096, CompressBound(len(in))}
			for range 3 {
				targets = append(targets, 1+rng.IntN(CompressBound(len(in))))
			}
			for _, target := range targets {
				cases = append(cases, refCase{Level: level, Target: target, Src: in})
			}
		}
	}
	blocks, consumed := reference(t, cases)
	bad := 0
	for i, c := range cases {
		got, n := CompressHCDestSize(c.Src, c.Target, c.Level)
		if n != consumed[i] || !bytes.Equal(got, blocks[i]) {
			bad++
			if bad < 5 {
				t.Errorf("case %d (level %d, %d bytes into %d): Go consumed %d into %d bytes, liblz4 %d into %d (first diff at %s)",
					i, c.Level, len(c.Src), c.Target, n, len(got), consumed[i], len(blocks[i]), firstDiff(got, blocks[i]))
			}
			continue
		}
		dec := make([]byte, n)
		if m, err := lz4.UncompressBlock(got, dec); err != nil || m != n || !bytes.Equal(dec, c.Src[:n]) {
			t.Fatalf("case %d: block does not decode to the consumed input: %d, %v", i, m, err)
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d cases differ", bad, len(cases))
	}
	t.Logf("%d LZ4_compress_HC_destSize cases (levels 1, 3, 6, 9) identical to liblz4", len(cases))
}

func TestDecompressPartial(t *testing.T) {
	for i, in := range inputs() {
		blk, n := CompressHCDestSize(in, 4096, 9)
		for _, target := range []int{0, min(1, n), n / 2, n} {
			got, err := DecompressPartial([]byte("prefix"), blk, target)
			if err != nil || string(got[:6]) != "prefix" || !bytes.Equal(got[6:], in[:target]) {
				t.Fatalf("input %d target %d: %v", i, target, err)
			}
		}
	}
	if _, err := DecompressPartial(nil, []byte{0x0F, 1, 0}, 10); err == nil {
		t.Fatal("match before the block accepted")
	}
}

func FuzzDecompressPartial(f *testing.F) {
	blk, _ := CompressDestSize([]byte("hello hello hello hello hello"), 100)
	f.Add(blk, uint16(20))
	f.Fuzz(func(t *testing.T, src []byte, target uint16) {
		out, err := DecompressPartial(nil, src, int(target))
		if len(out) > int(target) {
			t.Fatalf("%d bytes past the %d target (%v)", len(out), target, err)
		}
	})
}
