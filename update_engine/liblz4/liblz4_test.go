package liblz4

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/pierrec/lz4/v4"
)

// The reference: a C helper linked against the system liblz4 (Debian's
// liblz4-dev), built in a temporary directory for this test only.
const helperC = `
#include <lz4.h>
#include <lz4hc.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
static int rd(void *p, size_t n) { return fread(p, 1, n, stdin) == n; }
int main(void) {
	uint32_t hdr[3];
	while (rd(hdr, sizeof hdr)) {
		uint32_t level = hdr[0], target = hdr[1], n = hdr[2];
		char *src = malloc(n + 1), *dst = malloc(target + 1);
		if (!rd(src, n)) return 1;
		int consumed = (int)n, got;
		if (level == 0) got = LZ4_compress_destSize(src, dst, &consumed, (int)target);
		else got = LZ4_compress_HC_destSize(LZ4_createStreamHC(), src, dst, &consumed, (int)target, (int)level);
		uint32_t out[2] = {(uint32_t)consumed, (uint32_t)got};
		fwrite(out, sizeof out, 1, stdout);
		fwrite(dst, 1, got, stdout);
		free(src); free(dst);
	}
	return 0;
}
`

type refCase struct {
	level, target int
	src           []byte
}

// reference runs the C helper over cases and returns (block, consumed) per case.
func reference(t *testing.T, cases []refCase) ([][]byte, []int) {
	t.Helper()
	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not installed")
	}
	if _, err := os.Stat("/usr/include/lz4hc.h"); err != nil {
		t.Skip("liblz4-dev not installed (scripts/deps.sh installs it)")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "h.c"), []byte(helperC), 0o644)
	bin := filepath.Join(dir, "h")
	if out, err := exec.Command(cc, "-O1", "-o", bin, filepath.Join(dir, "h.c"), "-llz4").CombinedOutput(); err != nil {
		t.Fatalf("building the liblz4 helper: %v\n%s", err, out)
	}
	var in bytes.Buffer
	for _, c := range cases {
		binary.Write(&in, binary.LittleEndian, [3]uint32{uint32(c.level), uint32(c.target), uint32(len(c.src))})
		in.Write(c.src)
	}
	cmd := exec.Command(bin)
	cmd.Stdin = &in
	outB, err := cmd.Output()
	if err != nil {
		t.Fatalf("liblz4 helper: %v", err)
	}
	r := bufio.NewReader(bytes.NewReader(outB))
	var blocks [][]byte
	var consumed []int
	for range cases {
		var h [2]uint32
		if err := binary.Read(r, binary.LittleEndian, &h); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, h[1])
		io.ReadFull(r, b)
		blocks, consumed = append(blocks, b), append(consumed, int(h[0]))
	}
	return blocks, consumed
}

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
			cases = append(cases, refCase{0, target, in})
		}
	}
	blocks, consumed := reference(t, cases)
	for i, c := range cases {
		got, n := CompressDestSize(c.src, c.target)
		if n != consumed[i] || !bytes.Equal(got, blocks[i]) {
			t.Fatalf("case %d (%d bytes into %d): Go consumed %d into %d bytes, liblz4 %d into %d (first diff at %s)",
				i, len(c.src), c.target, n, len(got), consumed[i], len(blocks[i]), firstDiff(got, blocks[i]))
		}
		// and it decodes
		dec := make([]byte, n)
		if m, err := lz4.UncompressBlock(got, dec); err != nil || m != n || !bytes.Equal(dec, c.src[:n]) {
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
				cases = append(cases, refCase{level, target, in})
			}
		}
	}
	blocks, consumed := reference(t, cases)
	bad := 0
	for i, c := range cases {
		got, n := CompressHCDestSize(c.src, c.target, c.level)
		if n != consumed[i] || !bytes.Equal(got, blocks[i]) {
			bad++
			if bad < 5 {
				t.Errorf("case %d (level %d, %d bytes into %d): Go consumed %d into %d bytes, liblz4 %d into %d (first diff at %s)",
					i, c.level, len(c.src), c.target, n, len(got), consumed[i], len(blocks[i]), firstDiff(got, blocks[i]))
			}
			continue
		}
		dec := make([]byte, n)
		if m, err := lz4.UncompressBlock(got, dec); err != nil || m != n || !bytes.Equal(dec, c.src[:n]) {
			t.Fatalf("case %d: block does not decode to the consumed input: %d, %v", i, m, err)
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d cases differ", bad, len(cases))
	}
	t.Logf("%d LZ4_compress_HC_destSize cases (levels 1, 3, 6, 9) identical to liblz4", len(cases))
}
