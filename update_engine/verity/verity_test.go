package verity

import (
	"bytes"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vabc-go/vabc/internal/testtool"
)

type mem []byte

func (m mem) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m[off:]), nil }
func (m mem) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }

func randImage(blocks int, seed uint64) mem {
	rng := rand.New(rand.NewPCG(seed, 9))
	m := make(mem, blocks*4096)
	for i := range m {
		m[i] = byte(rng.Uint32())
	}
	return m
}

// TestHashTreeVeritysetup compares with Linux's veritysetup (cryptsetup),
// which writes the same tree layout (top level first) with --no-superblock.
func TestHashTreeVeritysetup(t *testing.T) {
	testtool.Need(t, "veritysetup")
	for _, tc := range []struct {
		name   string
		blocks int
		alg    string
	}{
		{"one-block", 1, "sha256"},
		{"two-levels", 300, "sha256"},
		{"three-levels", 16400, "sha256"},
		{"sha1", 1000, "sha1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := randImage(tc.blocks, uint64(tc.blocks))
			salt := []byte("0123456789abcdef0123456789abcdef")
			dir := t.TempDir()
			dp, hp := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
			os.WriteFile(dp, data, 0o644)
			out, err := exec.Command("veritysetup", "format", dp, hp, "--no-superblock", "--hash="+tc.alg,
				"--salt="+hex.EncodeToString(salt), "--data-block-size=4096", "--hash-block-size=4096").CombinedOutput()
			if err != nil {
				t.Fatalf("veritysetup: %v %s", err, out)
			}
			var rootHex string
			for _, l := range strings.Split(string(out), "\n") {
				if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "Root hash" {
					rootHex = strings.TrimSpace(v)
				}
			}
			want, _ := os.ReadFile(hp)
			ds := 32
			if tc.alg == "sha1" {
				ds = 20
			}
			nt := TreeBlocks(int64(tc.blocks), 4096, ds)
			img := append(data, make(mem, (nt+1)*4096)...)
			root, err := BuildHashTree(img, 4096, tc.alg, salt, Extent{0, uint64(tc.blocks)}, Extent{uint64(tc.blocks), uint64(nt + 1)})
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(root) != rootHex {
				t.Fatalf("root %x, veritysetup %s", root, rootHex)
			}
			got := img[tc.blocks*4096:]
			if len(want) > 0 && !bytes.Equal(got[:len(want)], want) {
				t.Fatalf("tree differs from veritysetup's (%d bytes)", len(want))
			}
			if tc.blocks > 1 && int64(len(want)) != nt*4096 {
				t.Fatalf("TreeBlocks %d, veritysetup wrote %d bytes", nt, len(want))
			}
		})
	}
}

func TestHashTreeTooSmall(t *testing.T) {
	img := randImage(600, 1)
	if _, err := BuildHashTree(img, 4096, "sha256", nil, Extent{0, 590}, Extent{590, 1}); err == nil {
		t.Fatal("too small tree extent accepted")
	}
	if _, err := BuildHashTree(img, 4096, "md5", nil, Extent{0, 590}, Extent{590, 5}); err == nil {
		t.Fatal("unknown algorithm accepted")
	}
}

// evalAt evaluates the codeword polynomial (first byte highest degree) at x.
func evalAt(cw []byte, x byte) byte {
	var acc byte
	for _, c := range cw {
		acc = gfMul(acc, x) ^ c
	}
	return acc
}

// TestRSCodewords checks that data||parity is divisible by the generator,
// i.e. vanishes at a^0 .. a^(roots-1), which fixes the parity uniquely.
func TestRSCodewords(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, roots := range []int{2, 8, 24} {
		rs := newRS(roots)
		for trial := 0; trial < 20; trial++ {
			data := make([]byte, 255-roots)
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			par := make([]byte, roots)
			rs.encode(data, par)
			cw := append(append([]byte{}, data...), par...)
			for i := 0; i < roots; i++ {
				if v := evalAt(cw, gfExp[i]); v != 0 {
					t.Fatalf("roots %d: codeword(a^%d) = %d", roots, i, v)
				}
			}
		}
	}
}

func TestEncodeFECLayout(t *testing.T) {
	const roots, nd = 2, 600
	img := randImage(nd, 7)
	rounds := (nd + 252) / 253
	fecBlocks := FECSize(nd, 4096, roots) / 4096
	img = append(img, make(mem, fecBlocks*4096)...)
	if err := EncodeFEC(img, 4096, roots, Extent{0, nd}, Extent{nd, uint64(fecBlocks)}); err != nil {
		t.Fatal(err)
	}
	// Rebuild a few codewords by hand and check they vanish at the roots.
	for _, c := range []struct{ i, k int }{{0, 0}, {1, 4095}, {rounds - 1, 17}} {
		var cw []byte
		for j := 0; j < 253; j++ {
			idx := j*rounds + c.i
			if idx < nd {
				cw = append(cw, img[idx*4096+c.k])
			} else {
				cw = append(cw, 0)
			}
		}
		off := nd*4096 + c.i*4096*roots + c.k*roots
		cw = append(cw, img[off:off+roots]...)
		for r := 0; r < roots; r++ {
			if evalAt(cw, gfExp[r]) != 0 {
				t.Fatalf("round %d byte %d: not a codeword", c.i, c.k)
			}
		}
	}
	if err := EncodeFEC(img, 4096, roots, Extent{0, nd}, Extent{nd, uint64(fecBlocks - 1)}); err == nil {
		t.Fatal("wrong fec extent size accepted")
	}
}
