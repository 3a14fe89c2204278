// Package verity regenerates the dm-verity hash tree and the Reed-Solomon
// FEC data of a partition image, as update_engine does after applying a delta
// payload of minor version >= 6 (spec payload-format.md §3.3,
// verity_writer_android.cc / HashTreeBuilder / libfec).
//
// Hash tree: every data block is hashed as H(salt || block); digests are
// padded to a power of two; each level is padded to whole blocks and hashed
// again until a level fits in one block. Levels are stored top level first.
//
// FEC: RS(255, 255-roots) over GF(2^8) (polynomial 0x11d, fcr 0, prim 1).
// Data blocks are interleaved: codeword byte j of round i at block offset k
// comes from data block j*rounds + i, byte k; blocks past the data read as
// zeros. Round i's parity (block_size*roots bytes, roots per codeword k) is
// stored at fec offset i*block_size*roots.
package verity

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"
)

// Image is a partition image being rewritten.
type Image interface {
	io.ReaderAt
	io.WriterAt
}

// Extent is a run of blocks.
type Extent struct {
	Start, Num uint64
}

func newHash(alg string) (func() hash.Hash, error) {
	switch alg {
	case "sha1":
		return sha1.New, nil
	case "sha256", "":
		return sha256.New, nil
	case "sha512":
		return sha512.New, nil
	}
	return nil, fmt.Errorf("verity: unsupported hash_tree_algorithm %q", alg)
}

func pow2(n int) int {
	p := 1
	for p < n {
		p <<= 1
	}
	return p
}

// TreeBlocks is the number of hash-tree blocks for dataBlocks blocks.
func TreeBlocks(dataBlocks, bs int64, digestSize int) int64 {
	hs := int64(pow2(digestSize))
	if dataBlocks <= 1 {
		return 0 // the root hash is the hash of the single data block
	}
	var total int64
	n := dataBlocks
	for {
		lvl := (n*hs + bs - 1) / bs
		total += lvl
		if lvl <= 1 {
			return total
		}
		n = lvl
	}
}

// BuildHashTree hashes the blocks of data and writes the tree into tree. It
// returns the root hash. Blocks of tree beyond the tree are zeroed.
func BuildHashTree(img Image, bs int64, alg string, salt []byte, data, tree Extent) ([]byte, error) {
	nh, err := newHash(alg)
	if err != nil {
		return nil, err
	}
	if data.Num == 0 {
		return nil, errors.New("verity: empty hash_tree_data_extent")
	}
	ds := nh().Size()
	hs := pow2(ds)
	need := TreeBlocks(int64(data.Num), bs, ds)
	if uint64(need) > tree.Num {
		return nil, fmt.Errorf("verity: hash tree needs %d blocks, hash_tree_extent has %d", need, tree.Num)
	}
	if data.Num == 1 {
		buf := make([]byte, bs)
		if _, err := img.ReadAt(buf, int64(data.Start)*bs); err != nil {
			return nil, fmt.Errorf("verity: reading data block %d: %w", data.Start, err)
		}
		h := nh()
		h.Write(salt)
		h.Write(buf)
		if tree.Num > 0 {
			if _, err := img.WriteAt(make([]byte, int64(tree.Num)*bs), int64(tree.Start)*bs); err != nil {
				return nil, fmt.Errorf("verity: writing hash tree: %w", err)
			}
		}
		return h.Sum(nil), nil
	}
	// Level 0: hash the data blocks, in parallel chunks.
	n := int64(data.Num)
	lvl := make([]byte, ((n*int64(hs)+bs-1)/bs)*bs)
	workers := int64(min(runtime.GOMAXPROCS(0), 4))
	per := (n + workers - 1) / workers
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := int64(0); w < workers; w++ {
		lo, hi := w*per, min((w+1)*per, n)
		if lo >= hi {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := nh()
			buf := make([]byte, bs)
			for b := lo; b < hi; b++ {
				if _, err := img.ReadAt(buf, (int64(data.Start)+b)*bs); err != nil {
					errs[w] = fmt.Errorf("verity: reading data block %d: %w", int64(data.Start)+b, err)
					return
				}
				h.Reset()
				h.Write(salt)
				h.Write(buf)
				h.Sum(lvl[b*int64(hs) : b*int64(hs)][:0])
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	levels := [][]byte{lvl}
	for int64(len(lvl)) > bs {
		nb := int64(len(lvl)) / bs
		next := make([]byte, ((nb*int64(hs)+bs-1)/bs)*bs)
		h := nh()
		for b := int64(0); b < nb; b++ {
			h.Reset()
			h.Write(salt)
			h.Write(lvl[b*bs : (b+1)*bs])
			h.Sum(next[b*int64(hs) : b*int64(hs)][:0])
		}
		levels = append(levels, next)
		lvl = next
	}
	h := nh()
	h.Write(salt)
	h.Write(lvl)
	root := h.Sum(nil)
	off := int64(tree.Start) * bs
	for i := len(levels) - 1; i >= 0; i-- {
		if _, err := img.WriteAt(levels[i], off); err != nil {
			return nil, fmt.Errorf("verity: writing hash tree: %w", err)
		}
		off += int64(len(levels[i]))
	}
	if rest := int64(tree.Start+tree.Num)*bs - off; rest > 0 {
		if _, err := img.WriteAt(make([]byte, rest), off); err != nil {
			return nil, fmt.Errorf("verity: writing hash tree: %w", err)
		}
	}
	return root, nil
}

// WithContext wraps img so that every read and write fails once ctx ends:
// hashing or encoding a multi-GiB image then stops within one block's work.
func WithContext(ctx context.Context, img Image) Image { return ctxImage{ctx, img} }

type ctxImage struct {
	ctx context.Context
	img Image
}

func (c ctxImage) ReadAt(p []byte, off int64) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.img.ReadAt(p, off)
}

func (c ctxImage) WriteAt(p []byte, off int64) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.img.WriteAt(p, off)
}
