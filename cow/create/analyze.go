package create

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/pierrec/lz4/v4"
)

// Options control the analysis. The zero value is valid.
type Options struct {
	// BlockSize is the COW block size; 0 means 4096.
	BlockSize int
	// Xor enables Xor ops for changed blocks whose XOR against the source
	// block at the same offset compresses clearly better.
	Xor bool
	// Threads is the number of analysis workers; 0 means GOMAXPROCS. The
	// result does not depend on it.
	Threads int
	// Progress, if set, is called from worker goroutines with the bytes of
	// target analysed so far and the total (two passes over the target).
	Progress func(done, total int64)
}

func (o *Options) ensureDefaults() {
	if o.BlockSize == 0 {
		o.BlockSize = 4096
	}
	if o.Threads <= 0 {
		o.Threads = runtime.GOMAXPROCS(0)
	}
}

// Image is a partition image: random access plus its size in bytes. Bytes
// past Size read as zero (the last block is zero-padded).
type Image struct {
	R    io.ReaderAt
	Size int64
	Name string // for error messages
}

// readPadded fills p from offset off, zero-filling whatever lies past Size.
func (im Image) readPadded(p []byte, off int64) error {
	n := 0
	if off < im.Size {
		want := int64(len(p))
		if off+want > im.Size {
			want = im.Size - off
		}
		var err error
		n, err = im.R.ReadAt(p[:want], off)
		if n < int(want) {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("%s: read at offset %#x: %w", im.Name, off+int64(n), err)
		}
	}
	clear(p[n:])
	return nil
}

// Block sizes this package handles: the v2 format stores data_length in 16
// bits, and snapuserd only accepts 4096.
const (
	minBlockSize = 512
	maxBlockSize = 1 << 16
)

// chunkBlocks is how many blocks a worker handles per task (1 MiB of 4 KiB
// blocks).
const chunkBlocks = 256

// maxCandidates bounds how many equal-hash source blocks are tried per
// target block (a block repeated thousands of times must not make the
// analysis quadratic).
const maxCandidates = 64

// xorNumerator/xorDenominator: an Xor op is chosen when the XOR data
// compresses to at most 3/4 of what the plain block compresses to.
const (
	xorNumerator   = 3
	xorDenominator = 4
)

// Analyze decides, for every target block, which op the COW needs, then
// orders the ordered ops (see Order). Only the analysis is parallel; the
// result is the same for any Options.Threads.
func Analyze(ctx context.Context, src, tgt Image, opts Options) (*Plan, error) {
	opts.ensureDefaults()
	bs := opts.BlockSize
	if bs < minBlockSize || bs > maxBlockSize || bs&(bs-1) != 0 {
		return nil, fmt.Errorf("create: block size %d is not a power of two from %d to %d", bs, minBlockSize, maxBlockSize)
	}
	if src.Size < 0 || tgt.Size < 0 {
		return nil, fmt.Errorf("create: negative image size")
	}
	nS := blocksOf(src.Size, bs)
	nT := blocksOf(tgt.Size, bs)
	if nT > 1<<32 || nS > 1<<32 {
		return nil, fmt.Errorf("create: images over 2^32 blocks are not supported (source %d, target %d blocks)", nS, nT)
	}
	p := &Plan{BlockSize: bs, SourceSize: src.Size, TargetSize: tgt.Size, Blocks: make([]BlockOp, nT)}

	var progressDone atomic.Int64
	progressTotal := 2 * int64(nT) * int64(bs)
	progress := func(blocks int) {
		if opts.Progress != nil {
			opts.Progress(progressDone.Add(int64(blocks)*int64(bs)), progressTotal)
		}
	}

	// Pass 1 over max(nS, nT) blocks: hash source blocks, mark zero source
	// blocks, mark unchanged and zero target blocks.
	seed := maphash.MakeSeed() // hashes only select candidates; bytes decide
	shash := make([]uint64, nS)
	szero := make([]bool, nS)
	tzero := make([]bool, nT)
	thash := make([]uint64, nT)
	n1 := max(nS, nT)
	err := parallel(ctx, opts.Threads, n1, chunkBlocks*bs, func(start, end uint64, sbuf, tbuf []byte) error {
		cnt := int(end - start)
		sb, tb := sbuf[:cnt*bs], tbuf[:cnt*bs]
		off := int64(start) * int64(bs)
		if start < nS {
			if err := src.readPadded(sb, off); err != nil {
				return err
			}
		}
		if start < nT {
			if err := tgt.readPadded(tb, off); err != nil {
				return err
			}
		}
		for i := 0; i < cnt; i++ {
			b := start + uint64(i)
			s, t := sb[i*bs:(i+1)*bs], tb[i*bs:(i+1)*bs]
			if b < nS {
				szero[b] = isZero(s)
				if !szero[b] {
					shash[b] = maphash.Bytes(seed, s)
				}
			}
			if b < nT {
				tzero[b] = isZero(t)
				if b < nS && bytes.Equal(s, t) {
					p.Blocks[b].Kind = KindUnchanged
				} else if tzero[b] {
					p.Blocks[b].Kind = KindZero
				} else {
					p.Blocks[b].Kind = KindReplace // refined in pass 2
					thash[b] = maphash.Bytes(seed, t)
				}
			}
		}
		if start < nT {
			progress(int(min(end, nT) - start))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	// Hash index: hash → first source block, next[] chains blocks with the
	// same hash in ascending order. Zero blocks are left out: zero targets
	// are Zero ops.
	head := make(map[uint64]uint32, nS)
	next := make([]uint32, nS)
	const none = ^uint32(0)
	for s := int64(nS) - 1; s >= 0; s-- {
		if szero[s] {
			continue
		}
		h := shash[s]
		if old, ok := head[h]; ok {
			next[s] = old
		} else {
			next[s] = none
		}
		head[h] = uint32(s)
	}
	// stable[s]: source block s is never overwritten by the merge, so a copy
	// from it adds no ordering constraint.
	// Pass 2 writes p.Blocks concurrently, so it reads this snapshot.
	unchanged := make([]bool, nT)
	for b := range p.Blocks {
		unchanged[b] = p.Blocks[b].Kind == KindUnchanged
	}
	stable := func(s uint64) bool { return s >= nT || unchanged[s] }

	// Pass 2 over changed target blocks: Copy if some source block is
	// byte-equal (prefer stable sources, then the lowest block), else Xor
	// if enabled and clearly smaller, else Replace.
	err = parallel(ctx, opts.Threads, nT, chunkBlocks*bs, func(start, end uint64, sbuf, tbuf []byte) error {
		var lzc lz4.Compressor
		cbuf := make([]byte, lz4.CompressBlockBound(bs))
		xbuf := make([]byte, bs)
		cand := sbuf[:bs]
		loaded := false
		for b := start; b < end; b++ {
			if p.Blocks[b].Kind != KindReplace {
				continue
			}
			if !loaded { // one read for the chunk, only if a block needs it
				if err := tgt.readPadded(tbuf[:(end-start)*uint64(bs)], int64(start)*int64(bs)); err != nil {
					return err
				}
				loaded = true
			}
			tb := tbuf[(b-start)*uint64(bs) : (b-start+1)*uint64(bs)]
			best, found := uint64(0), false
			if s, ok := head[thash[b]]; ok {
				for tries := 0; s != none && tries < maxCandidates; tries, s = tries+1, next[s] {
					if found && !stable(uint64(s)) {
						continue
					}
					if err := src.readPadded(cand, int64(s)*int64(bs)); err != nil {
						return err
					}
					if !bytes.Equal(cand, tb) {
						continue
					}
					best, found = uint64(s), true
					if stable(best) {
						break
					}
				}
			}
			if found {
				p.Blocks[b] = BlockOp{Kind: KindCopy, Src: best}
				continue
			}
			if opts.Xor && b < nS {
				if err := src.readPadded(xbuf, int64(b)*int64(bs)); err != nil {
					return err
				}
				for i := range xbuf {
					xbuf[i] ^= tb[i]
				}
				plain := lz4Size(&lzc, tb, cbuf)
				xored := lz4Size(&lzc, xbuf, cbuf)
				if xored*xorDenominator <= plain*xorNumerator {
					p.Blocks[b] = BlockOp{Kind: KindXor, Src: b * uint64(bs)}
				}
			}
		}
		progress(int(end - start))
		return nil
	})
	if err != nil {
		return nil, err
	}

	p.Order, p.Broken, err = Order(p.Blocks, bs)
	if err != nil {
		return nil, err
	}
	p.recount()
	return p, nil
}

// lz4Size is the LZ4 block size of p (len(p) when it does not compress),
// the cheap estimate used to decide between Xor and Replace whatever codec
// the COW uses.
func lz4Size(c *lz4.Compressor, p, buf []byte) int {
	n, err := c.CompressBlock(p, buf)
	if err != nil || n == 0 || n >= len(p) {
		return len(p)
	}
	return n
}

func isZero(p []byte) bool {
	for len(p) >= 8 {
		if p[0]|p[1]|p[2]|p[3]|p[4]|p[5]|p[6]|p[7] != 0 {
			return false
		}
		p = p[8:]
	}
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}

// parallel runs fn over [0, n) in chunks of chunkBlocks blocks on up to
// threads workers, each with two chunk-sized buffers. The first error (or
// context cancellation) stops the remaining chunks.
func parallel(ctx context.Context, threads int, n uint64, bufBytes int, fn func(start, end uint64, sbuf, tbuf []byte) error) error {
	if n == 0 {
		return ctx.Err()
	}
	chunks := (n + chunkBlocks - 1) / chunkBlocks
	threads = int(min(uint64(threads), chunks))
	var nextChunk atomic.Uint64
	var firstErr error
	var once sync.Once
	var failed atomic.Bool
	var wg sync.WaitGroup
	for w := 0; w < threads; w++ {
		wg.Go(func() {
			sbuf := make([]byte, bufBytes)
			tbuf := make([]byte, bufBytes)
			for !failed.Load() {
				c := nextChunk.Add(1) - 1
				if c >= chunks {
					return
				}
				err := ctx.Err()
				if err == nil {
					start := c * chunkBlocks
					err = fn(start, min(start+chunkBlocks, n), sbuf, tbuf)
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					failed.Store(true)
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}
