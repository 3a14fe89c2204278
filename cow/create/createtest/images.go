// Package createtest generates source/target image pairs for tests of COW
// creation and merging: random and compressible data, shuffled blocks (long
// copy chains and cycles), in-place edits that favour XOR, zero runs,
// partition growth and shrink, and real ext4 images made with mkfs.ext4 -d.
package createtest

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
)

// BlockSize is the block size the generators think in.
const BlockSize = 4096

// Pair is a generated source/target pair.
type Pair struct {
	Name           string
	Source, Target []byte
}

// Pairs returns the synthetic pairs, deterministic for a seed. blocks is the
// source size in blocks (a few hundred keeps tests fast).
func Pairs(seed uint64, blocks int) []Pair {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	var out []Pair
	add := func(name string, s, t []byte) { out = append(out, Pair{name, s, t}) }

	// random: incompressible data, a fifth of the blocks rewritten.
	src := randomBytes(rng, blocks*BlockSize)
	tgt := bytes.Clone(src)
	for i := 0; i < blocks/5; i++ {
		b := rng.IntN(blocks)
		fillRandom(rng, tgt[b*BlockSize:(b+1)*BlockSize])
	}
	add("random", src, tgt)

	// compressible: text-like data with edits and moved blocks.
	src = textBytes(rng, blocks*BlockSize)
	tgt = bytes.Clone(src)
	for i := 0; i < blocks/4; i++ {
		b := rng.IntN(blocks)
		copy(tgt[b*BlockSize:(b+1)*BlockSize], textBytes(rng, BlockSize))
	}
	for i := 0; i < blocks/8; i++ {
		a, b := rng.IntN(blocks), rng.IntN(blocks)
		copy(tgt[a*BlockSize:(a+1)*BlockSize], src[b*BlockSize:(b+1)*BlockSize])
	}
	add("compressible", src, tgt)

	// shuffled: a permutation of the source blocks (one long cycle over
	// half the image plus random swaps: long copy chains and many cycles),
	// some blocks also duplicated.
	src = mixedBytes(rng, blocks*BlockSize)
	perm := make([]int, blocks)
	for i := range perm {
		perm[i] = i
	}
	half := blocks / 2
	for i := 0; i < half; i++ { // rotation: one cycle of length half
		perm[i] = (i + 1) % half
	}
	for i := 0; i < blocks/6; i++ { // swaps: 2-cycles
		a, b := half+rng.IntN(blocks-half), half+rng.IntN(blocks-half)
		perm[a], perm[b] = perm[b], perm[a]
	}
	tgt = make([]byte, len(src))
	for i, p := range perm {
		copy(tgt[i*BlockSize:(i+1)*BlockSize], src[p*BlockSize:(p+1)*BlockSize])
	}
	for i := 0; i < blocks/16; i++ { // chains: block i takes block i+1's data
		b := half + rng.IntN(blocks-half-1)
		copy(tgt[b*BlockSize:(b+1)*BlockSize], src[(b+1)*BlockSize:(b+2)*BlockSize])
	}
	add("shuffled", src, tgt)

	// shifted: small in-place edits (version bumps, pointer updates) in
	// most blocks and a byte-shifted region: XOR against the old block
	// compresses far better than the new block.
	src = randomBytes(rng, blocks*BlockSize)
	tgt = bytes.Clone(src)
	for b := 0; b < blocks; b++ {
		if rng.IntN(3) == 0 {
			continue
		}
		for k := 0; k < 8; k++ {
			tgt[b*BlockSize+rng.IntN(BlockSize)] ^= byte(1 + rng.IntN(255))
		}
	}
	shiftAt := blocks / 3 * BlockSize
	shiftLen := min(64, blocks/2) * BlockSize
	copy(tgt[shiftAt+7:shiftAt+shiftLen], src[shiftAt:shiftAt+shiftLen])
	add("shifted", src, tgt)

	// zeros: zero runs appear and disappear.
	src = mixedBytes(rng, blocks*BlockSize)
	for i := 0; i < 4; i++ {
		a := rng.IntN(blocks - 16)
		clear(src[a*BlockSize : (a+8+rng.IntN(8))*BlockSize])
	}
	tgt = bytes.Clone(src)
	for i := 0; i < 6; i++ {
		a := rng.IntN(blocks - 32)
		clear(tgt[a*BlockSize : (a+1+rng.IntN(31))*BlockSize])
	}
	for i := 0; i < blocks/10; i++ {
		b := rng.IntN(blocks)
		copy(tgt[b*BlockSize:(b+1)*BlockSize], textBytes(rng, BlockSize))
	}
	add("zeros", src, tgt)

	// grow: the partition grows by a third (new data, zeros and copies of
	// old blocks beyond the old end); the size is not a block multiple.
	src = mixedBytes(rng, blocks*BlockSize)
	tgt = append(bytes.Clone(src), make([]byte, blocks/3*BlockSize+1000)...)
	for i := 0; i < blocks/6; i++ {
		b := blocks + rng.IntN(blocks/3)
		switch rng.IntN(3) {
		case 0:
			copy(tgt[b*BlockSize:(b+1)*BlockSize], textBytes(rng, BlockSize))
		case 1:
			a := rng.IntN(blocks)
			copy(tgt[b*BlockSize:(b+1)*BlockSize], src[a*BlockSize:(a+1)*BlockSize])
		}
	}
	copy(tgt[len(tgt)-1000:], textBytes(rng, 1000))
	copy(tgt[0:BlockSize], src[len(src)-BlockSize:]) // moved from the old end
	add("grow", src, tgt)

	// shrink: the partition loses a quarter; data from the cut tail moves
	// to the front.
	src = mixedBytes(rng, blocks*BlockSize)
	keep := blocks * 3 / 4
	tgt = bytes.Clone(src[:keep*BlockSize])
	for i := 0; i < blocks/8; i++ {
		a, b := rng.IntN(keep), keep+rng.IntN(blocks-keep)
		copy(tgt[a*BlockSize:(a+1)*BlockSize], src[b*BlockSize:(b+1)*BlockSize])
	}
	for i := 0; i < blocks/10; i++ {
		b := rng.IntN(keep)
		copy(tgt[b*BlockSize:(b+1)*BlockSize], textBytes(rng, BlockSize))
	}
	add("shrink", src, tgt)
	return out
}

func randomBytes(rng *rand.Rand, n int) []byte {
	p := make([]byte, n)
	fillRandom(rng, p)
	return p
}

func fillRandom(rng *rand.Rand, p []byte) {
	for i := 0; i+8 <= len(p); i += 8 {
		v := rng.Uint64()
		for k := 0; k < 8; k++ {
			p[i+k] = byte(v >> (8 * k))
		}
	}
	for i := len(p) &^ 7; i < len(p); i++ {
		p[i] = byte(rng.Uint32())
	}
}

var words = []string{"system", "vendor", "android", "update", "snapshot", "merge", "block", "copy",
	"the", "of", "and", "kernel", "partition", "0x1f2e", "lib", "so", "\n", "apk", "dex", "\x00\x00\x00\x00"}

func textBytes(rng *rand.Rand, n int) []byte {
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[rng.IntN(len(words))])
		b.WriteByte(' ')
	}
	return b.Bytes()[:n]
}

// mixedBytes alternates random and text blocks (every block distinct).
func mixedBytes(rng *rand.Rand, n int) []byte {
	p := make([]byte, n)
	for off := 0; off < n; off += BlockSize {
		end := min(off+BlockSize, n)
		if rng.IntN(2) == 0 {
			fillRandom(rng, p[off:end])
		} else {
			copy(p[off:end], textBytes(rng, end-off))
		}
	}
	return p
}

// Ext4Pair builds a source ext4 image from a generated directory tree with
// mkfs.ext4 -d and a target image from the same tree after file changes
// (rewritten, appended, deleted and new files). It returns an error when
// mkfs.ext4 is not installed; tests skip then.
func Ext4Pair(dir string, seed uint64, sizeKiB int) (Pair, error) {
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		if _, e := os.Stat("/usr/sbin/mkfs.ext4"); e == nil {
			mkfs = "/usr/sbin/mkfs.ext4"
		} else if _, e := os.Stat("/sbin/mkfs.ext4"); e == nil {
			mkfs = "/sbin/mkfs.ext4"
		} else {
			return Pair{}, fmt.Errorf("mkfs.ext4 not found: %w", err)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0xe47))
	tree := filepath.Join(dir, "tree")
	files := map[string][]byte{}
	for i := 0; i < 24; i++ {
		name := filepath.Join(fmt.Sprintf("d%d", i%4), fmt.Sprintf("f%02d.bin", i))
		n := 1000 + rng.IntN(40000)
		if i%2 == 0 {
			files[name] = textBytes(rng, n)
		} else {
			files[name] = randomBytes(rng, n)
		}
	}
	build := func(img string) ([]byte, error) {
		os.RemoveAll(tree)
		for name, data := range files {
			p := filepath.Join(tree, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return nil, err
			}
			if err := os.WriteFile(p, data, 0o644); err != nil {
				return nil, err
			}
		}
		cmd := exec.Command(mkfs, "-q", "-F", "-b", "4096", "-d", tree,
			"-U", "0b1f6a4e-6e1c-4a57-9d7e-3c1c2e6a8b10", "-E", "hash_seed=1f6d5a3c-2b8e-4f1a-9c7d-6e5f4a3b2c1d",
			"-O", "^has_journal,^metadata_csum", "-T", "default", img, fmt.Sprintf("%dk", sizeKiB))
		cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=1700000000")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("mkfs.ext4: %v: %s", err, out)
		}
		return os.ReadFile(img)
	}
	src, err := build(filepath.Join(dir, "src.img"))
	if err != nil {
		return Pair{}, err
	}
	// File changes: edit a few bytes in some files, rewrite some, append to
	// some, delete two and add new ones.
	i := 0
	for _, name := range sortedKeys(files) {
		data := files[name]
		switch i % 6 {
		case 0:
			d := bytes.Clone(data)
			for k := 0; k < 5; k++ {
				d[rng.IntN(len(d))] ^= 0x55
			}
			files[name] = d
		case 1:
			files[name] = randomBytes(rng, len(data))
		case 2:
			files[name] = append(bytes.Clone(data), textBytes(rng, 9000)...)
		case 3:
			if i < 12 {
				delete(files, name)
			}
		}
		i++
	}
	files["new/added.bin"] = randomBytes(rng, 30000)
	files["new/notes.txt"] = textBytes(rng, 12000)
	tgt, err := build(filepath.Join(dir, "tgt.img"))
	if err != nil {
		return Pair{}, err
	}
	return Pair{"ext4", src, tgt}, nil
}

func sortedKeys(m map[string][]byte) []string { return slices.Sorted(maps.Keys(m)) }
