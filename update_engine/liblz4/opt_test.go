package liblz4

import (
	"bytes"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

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

// TestOptimalLevelsMatchLiblz4: LZ4_compress_HC_destSize at levels 10…12
// over every kind of input and destination sizes from 1 byte to past the
// bound; the larger inputs get fewer destination sizes to keep it fast.
func TestOptimalLevelsMatchLiblz4(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	var cases []lz4ref.Case
	for _, in := range optInputs(t) {
		bound := CompressBound(len(in))
		for _, level := range []int{10, 11, 12} {
			targets := []int{1, 2, 5, 6, 13, 16, 17, 20, 64, 100, 512, 4096, bound - 1, bound, bound + 100}
			nrand := 4
			if len(in) > 8192 {
				targets, nrand = []int{1, 17, 4096, bound}, 0
			}
			for range nrand {
				targets = append(targets, 1+rng.IntN(bound+1))
			}
			for _, target := range targets {
				cases = append(cases, lz4ref.Case{Level: level, Target: target, Src: in})
			}
		}
	}
	check(t, cases)
}

// TestCompressHCMatchesLiblz4: LZ4_compress_HC (the whole input or
// nothing) at every level, including the ones liblz4 clamps, into
// capacities around the compressed size and the bound.
func TestCompressHCMatchesLiblz4(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	var cases []lz4ref.Case
	for i, in := range optInputs(t) {
		if (len(in) > 8192 && i%5 != 0) || (len(in) > 1000 && i%2 != 0) {
			continue
		}
		bound := CompressBound(len(in))
		for _, level := range []int{-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 100} {
			if len(in) > 8192 && level%3 != 0 {
				continue
			}
			size := len(CompressHC(in, bound, level))
			targets := []int{size - 1, size, bound - 1, bound}
			if len(in) < 100 {
				targets = append(targets, 0, 1, 1+rng.IntN(bound))
			}
			for _, target := range targets {
				cases = append(cases, lz4ref.Case{Level: level, Target: target, Src: in, Normal: true})
			}
		}
	}
	check(t, cases)
}

// TestClampedLevelsDestSize: LZ4_compress_HC_destSize with levels below 1
// and above 12.
func TestClampedLevelsDestSize(t *testing.T) {
	var cases []lz4ref.Case
	for i, in := range optInputs(t) {
		if i%4 == 0 {
			for _, level := range []int{-100, -1, 13, 1 << 20} {
				cases = append(cases, lz4ref.Case{Level: level, Target: 1 + len(in)/3, Src: in})
			}
		}
	}
	check(t, cases)
}

func check(t *testing.T, cases []lz4ref.Case) {
	// The Go side runs while the helper does.
	type result struct {
		block []byte
		n     int
	}
	res := make([]result, len(cases))
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(cases); i += workers {
				c := cases[i]
				if c.Normal {
					if b := CompressHC(c.Src, c.Target, c.Level); b != nil {
						res[i] = result{b, len(c.Src)}
					}
				} else {
					b, n := CompressHCDestSize(c.Src, c.Target, c.Level)
					res[i] = result{b, n}
				}
			}
		})
	}
	blocks, consumed := lz4ref.Run(t, cases)
	wg.Wait()
	bad := 0
	for i, c := range cases {
		got, n := res[i].block, res[i].n
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

// clusters is the Go side of lz4ref's Clusters case.
func clusters(src []byte, target, level int) ([]byte, int) {
	var all []byte
	off := 0
	for off < len(src) {
		b, n := CompressHCDestSize(src[off:], target, level)
		if len(b) == 0 || n == 0 {
			break
		}
		all = append(all, b...)
		off += n
	}
	return all, off
}

// benchInput: 1 MiB of ELF (this test binary) and text, halves.
func benchInput(t testing.TB, size int) []byte {
	exe, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	b := append([]byte(nil), exe[:min(len(exe), size/2)]...)
	rng := rand.New(rand.NewPCG(21, 22))
	words := []string{"ro.build.version ", "system/lib64/", "android.hardware.", "=1\n", "0x0000 ", "erofs "}
	for len(b) < size {
		b = append(b, words[rng.IntN(len(words))]...)
	}
	return b[:size]
}

// TestClustersMatchLiblz4: mkfs.erofs's use, 4 KiB clusters one after the
// other over ELF and text, at every level.
func TestClustersMatchLiblz4(t *testing.T) {
	in := benchInput(t, 96<<10)
	var cases []lz4ref.Case
	for level := 1; level <= 12; level++ {
		for _, target := range []int{4096, 16384} {
			cases = append(cases, lz4ref.Case{Level: level, Target: target, Src: in, Clusters: true})
		}
	}
	blocks, consumed := lz4ref.Run(t, cases)
	for i, c := range cases {
		got, n := clusters(c.Src, c.Target, c.Level)
		if n != consumed[i] || !bytes.Equal(got, blocks[i]) {
			t.Fatalf("level %d, %d-byte clusters: Go consumed %d into %d bytes, liblz4 %d into %d (first diff at %s)",
				c.Level, c.Target, n, len(got), consumed[i], len(blocks[i]), firstDiff(got, blocks[i]))
		}
	}
}

// TestSpeedVsLiblz4 (VABC_LZ4_BENCH=1) compares the CPU time of Go and of
// liblz4 for 4 KiB clusters over 1 MiB of ELF and text at levels 9, 10, 12.
func TestSpeedVsLiblz4(t *testing.T) {
	if os.Getenv("VABC_LZ4_BENCH") == "" {
		t.Skip("VABC_LZ4_BENCH=1 runs the speed comparison")
	}
	in := benchInput(t, 1<<20)
	const reps = 3
	for _, level := range []int{9, 10, 11, 12} {
		var cases []lz4ref.Case
		for range reps {
			cases = append(cases, lz4ref.Case{Level: level, Target: 4096, Src: in, Clusters: true})
		}
		blocks, _, cCPU := lz4ref.RunCPU(t, cases)
		start := cpuTime(t)
		var got []byte
		for range reps {
			got, _ = clusters(in, 4096, level)
		}
		goCPU := cpuTime(t) - start
		if !bytes.Equal(got, blocks[0]) {
			t.Fatalf("level %d: output differs from liblz4's", level)
		}
		mb := float64(reps*len(in)) / 1e6
		t.Logf("level %2d: Go %6.1f MB/s, liblz4 %6.1f MB/s (CPU time; Go/liblz4 %.2f×), ratio %.3f",
			level, mb/goCPU.Seconds(), mb/cCPU.Seconds(), cCPU.Seconds()/goCPU.Seconds(), float64(len(got))/float64(len(in)))
	}
}

func cpuTime(t testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// FuzzCompressHC compares both LZ4HC modes, at any level and destination
// size, with liblz4 itself (a running lz4ref helper), and checks that each
// block decodes to the input it claims.
func FuzzCompressHC(f *testing.F) {
	f.Add([]byte("hello hello hello hello hello hello"), int8(12), uint16(20), false)
	f.Add(bytes.Repeat([]byte("abcabcab"), 700), int8(11), uint16(300), false)
	f.Add(make([]byte, 5000), int8(10), uint16(17), true)
	ref := lz4ref.Start(f)
	f.Fuzz(func(t *testing.T, src []byte, level int8, target uint16, normal bool) {
		c := lz4ref.Case{Level: int(level), Target: int(target), Src: src, Normal: normal}
		if !normal && c.Level == 0 {
			c.Level = 12 // level 0 is the helper's LZ4_compress_destSize
		}
		var got []byte
		var n int
		if normal {
			if got = CompressHC(src, c.Target, c.Level); got != nil {
				n = len(src)
			}
		} else {
			got, n = CompressHCDestSize(src, c.Target, c.Level)
		}
		if len(got) > c.Target {
			t.Fatalf("%d-byte block for a %d-byte destination", len(got), c.Target)
		}
		want, wantN, err := ref.Do(c)
		if err != nil {
			t.Fatal(err)
		}
		if len(want) == 0 {
			wantN = 0 // a failed liblz4 call leaves *srcSizePtr as it was
		}
		if n != wantN || !bytes.Equal(got, want) {
			t.Fatalf("level %d, normal %v, %d bytes into %d: Go consumed %d into %d bytes, liblz4 %d into %d (first diff at %s)",
				c.Level, normal, len(src), c.Target, n, len(got), wantN, len(want), firstDiff(got, want))
		}
		if got != nil {
			dec := make([]byte, n)
			if m, err := lz4.UncompressBlock(got, dec); n > 0 && (err != nil || m != n || !bytes.Equal(dec, src[:n])) {
				t.Fatalf("block does not decode to the consumed input: %d, %v", m, err)
			}
		}
	})
}
