package verity

import (
	"fmt"
	"runtime"
	"sync"
)

// GF(2^8) with primitive polynomial x^8+x^4+x^3+x^2+1 (0x11d), generator 2.
var (
	gfExp [512]byte
	gfLog [256]int
)

func init() {
	x := 1
	for i := 0; i < 255; i++ {
		gfExp[i] = byte(x)
		gfLog[x] = i
		x <<= 1
		if x&0x100 != 0 {
			x ^= 0x11d
		}
	}
	for i := 255; i < 512; i++ {
		gfExp[i] = gfExp[i-255]
	}
}

func gfMul(a, b byte) byte {
	if a == 0 || b == 0 {
		return 0
	}
	return gfExp[gfLog[a]+gfLog[b]]
}

// rsEncoder computes RS parity for (255-roots) data bytes per codeword.
type rsEncoder struct {
	roots int
	// mul[k] is the table "fb * c[roots-1-k]" so the inner loop is a lookup.
	mul [][256]byte
}

// newRS builds the generator g(x) = prod_{i<roots} (x - a^i) (fcr 0, prim 1)
// and multiplication tables for its coefficients.
func newRS(roots int) *rsEncoder {
	g := make([]byte, roots+1) // g[k] is the coefficient of x^k
	g[0] = 1
	for i := 0; i < roots; i++ {
		r := gfExp[i]
		// Multiply by (x + r).
		for k := i + 1; k > 0; k-- {
			g[k] = g[k-1] ^ gfMul(g[k], r)
		}
		g[0] = gfMul(g[0], r)
	}
	e := &rsEncoder{roots: roots, mul: make([][256]byte, roots)}
	for k := 0; k < roots; k++ {
		c := g[roots-1-k] // coefficient for remainder slot k (x^(roots-1-k))
		for v := 0; v < 256; v++ {
			e.mul[k][v] = gfMul(byte(v), c)
		}
	}
	return e
}

// encode writes the parity of data (highest-degree coefficient first) to par.
func (e *rsEncoder) encode(data []byte, par []byte) {
	r := e.roots
	for i := range par[:r] {
		par[i] = 0
	}
	for _, d := range data {
		fb := d ^ par[0]
		for k := 0; k < r-1; k++ {
			par[k] = par[k+1] ^ e.mul[k][fb]
		}
		par[r-1] = e.mul[r-1][fb]
	}
}

// FECSize is the size in bytes of the FEC data for dataBlocks blocks.
func FECSize(dataBlocks, bs int64, roots int) int64 {
	rsn := int64(255 - roots)
	rounds := (dataBlocks + rsn - 1) / rsn
	return rounds * int64(roots) * bs
}

// EncodeFEC computes the FEC of the blocks in data and writes it to fec.
func EncodeFEC(img Image, bs int64, roots int, data, fec Extent) error {
	if roots <= 0 || roots >= 255 {
		return fmt.Errorf("verity: fec_roots %d out of range", roots)
	}
	rsn := int64(255 - roots)
	nd := int64(data.Num)
	rounds := (nd + rsn - 1) / rsn
	if want := FECSize(nd, bs, roots); int64(fec.Num)*bs != want {
		return fmt.Errorf("verity: FEC needs %d bytes for %d data blocks, fec_extent has %d", want, nd, int64(fec.Num)*bs)
	}
	rs := newRS(roots)
	workers := int64(min(runtime.GOMAXPROCS(0), 4))
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := int64(0); w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			blocks := make([]byte, rsn*bs) // column j = block j*rounds+i
			word := make([]byte, rsn)
			out := make([]byte, bs*int64(roots))
			for i := w; i < rounds; i += workers {
				for j := int64(0); j < rsn; j++ {
					dst := blocks[j*bs : (j+1)*bs]
					if idx := j*rounds + i; idx < nd {
						if _, err := img.ReadAt(dst, (int64(data.Start)+idx)*bs); err != nil {
							errs[w] = fmt.Errorf("verity: FEC reading block %d: %w", int64(data.Start)+idx, err)
							return
						}
					} else {
						clear(dst)
					}
				}
				for k := int64(0); k < bs; k++ {
					for j := int64(0); j < rsn; j++ {
						word[j] = blocks[j*bs+k]
					}
					rs.encode(word, out[k*int64(roots):])
				}
				if _, err := img.WriteAt(out, int64(fec.Start)*bs+i*bs*int64(roots)); err != nil {
					errs[w] = fmt.Errorf("verity: writing FEC: %w", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
