package generate

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/vabc-go/vabc/update_engine/bsdiff"
	"github.com/vabc-go/vabc/update_engine/erofs"
	"github.com/vabc-go/vabc/update_engine/liblz4"
	"github.com/vabc-go/vabc/update_engine/lz4diff"
	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/puffin"
)

// lz4diffMinor is the first minor version with LZ4DIFF_BSDIFF and
// LZ4DIFF_PUFFDIFF.
const lz4diffMinor = 9

// DefaultLZ4DiffCompression is what mkfs.erofs -zlz4hc uses (liblz4's
// LZ4HC_CLEVEL_DEFAULT, 9) and what AOSP's generator records for every
// EROFS file when it is not told otherwise.
const DefaultLZ4DiffCompression = "lz4hc,9"

// ParseLZ4DiffCompression parses an EROFS compressor as given to mkfs.erofs
// -z (and in AOSP's misc_info erofs_default_compressor): "lz4", "lz4hc" or
// "lz4hc,N". EROFS images do not record it: both write LZ4 streams.
func ParseLZ4DiffCompression(s string) (lz4diff.Algorithm, int32, error) {
	name, lv, hasLevel := strings.Cut(strings.TrimSpace(s), ",")
	switch name {
	case "lz4":
		if hasLevel {
			return 0, 0, fmt.Errorf("generate: EROFS compressor %q: lz4 takes no level", s)
		}
		return lz4diff.LZ4, 0, nil
	case "lz4hc":
		level := 9
		if hasLevel {
			n, err := strconv.Atoi(lv)
			if err != nil || n < 0 || n > 12 {
				return 0, 0, fmt.Errorf("generate: EROFS compressor %q: level must be 0…12", s)
			}
			level = n
			if level == 0 {
				level = 9 // liblz4 takes level 0 as its default
			}
		}
		if level > liblz4.HCMaxLevel {
			return 0, 0, fmt.Errorf("generate: EROFS compressor %q: LZ4HC levels are 1…%d (mkfs.erofs refuses others)", s, liblz4.HCMaxLevel)
		}
		return lz4diff.LZ4HC, int32(level), nil
	}
	return 0, 0, fmt.Errorf("generate: EROFS compressor %q (want lz4, lz4hc or lz4hc,N)", s)
}

func (c *Config) lz4diffOK() bool {
	return c.LZ4Diff && !c.DisableDiff && c.MinorVersion >= lz4diffMinor
}

// erofsFile is one compressed file of an EROFS image as the lz4diff
// generator sees it (AOSP erofs_filesystem.cc): its pclusters in logical
// order, uncompressed ones stretched to their physical size and joined, and
// the physical blocks they occupy.
type erofsFile struct {
	info   lz4diff.Info
	blocks [][2]int // block extents [start, end)
	nblk   int
}

// erofsFiles lists the compressed regular files of img that LZ4DIFF can
// cover, by path. It returns nil when img is not an EROFS image.
func erofsFiles(img []byte, bs int, algo lz4diff.Algorithm, level int32) (map[string]*erofsFile, []string) {
	fs, err := erofs.Open(bytes.NewReader(img), int64(len(img)))
	if err != nil || fs.BlockSize() != int64(bs) {
		return nil, nil
	}
	files := map[string]*erofsFile{}
	var order []string
	seen := map[uint64]bool{}
	err = fs.Walk(func(f erofs.File) error {
		ino := f.Inode
		if f.Type != erofs.TypeRegular || !ino.Compressed() || seen[ino.Nid] {
			return nil
		}
		seen[ino.Nid] = true
		exts, err := fs.Extents(ino)
		if err != nil || len(exts) == 0 {
			return nil
		}
		ef := &erofsFile{info: lz4diff.Info{Algo: algo, Level: level, ZeroPadding: fs.ZeroPadding()}}
		var off uint64
		for i, e := range exts {
			if e.Inline || e.Hole || e.Interlaced || (e.Encoded && (e.Algorithm != erofs.AlgLZ4 || e.LogicalLen <= uint64(e.PhysLen))) || e.Logical != off {
				// not representable as a CompressedBlockInfo list
				return nil
			}
			ll := e.LogicalLen
			if !e.Encoded {
				// Like AOSP: an uncompressed pcluster counts with its
				// trailing bytes; only the last may be short.
				if ll < uint64(e.PhysLen) && i+1 != len(exts) {
					return nil
				}
				ll = uint64(e.PhysLen)
			}
			bl := ef.info.Blocks
			if !e.Encoded && len(bl) > 0 && bl[len(bl)-1].CompressedLength >= bl[len(bl)-1].UncompressedLength {
				bl[len(bl)-1].CompressedLength += ll
				bl[len(bl)-1].UncompressedLength += ll
			} else {
				ef.info.Blocks = append(bl, lz4diff.Block{UncompressedOffset: off, UncompressedLength: ll, CompressedLength: uint64(e.PhysLen)})
			}
			off += ll
			start, n := int(e.Physical)/bs, int(e.PhysLen)/bs
			if l := len(ef.blocks); l > 0 && ef.blocks[l-1][1] == start {
				ef.blocks[l-1][1] += n
			} else {
				ef.blocks = append(ef.blocks, [2]int{start, start + n})
			}
			ef.nblk += n
		}
		files[f.Path] = ef
		order = append(order, f.Path)
		return nil
	})
	if err != nil {
		return nil, nil
	}
	return files, order
}

func (ef *erofsFile) data(img []byte, bs int) []byte {
	out := make([]byte, 0, ef.nblk*bs)
	for _, b := range ef.blocks {
		out = append(out, img[b[0]*bs:b[1]*bs]...)
	}
	return out
}

func (ef *erofsFile) extents() []*metadata.Extent {
	var out []*metadata.Extent
	for _, b := range ef.blocks {
		out = append(out, ext(b[0], b[1]-b[0]))
	}
	return out
}

// lz4Candidate is a file LZ4DIFF may cover.
type lz4Candidate struct {
	old, new *erofsFile
	u        *unit // the LZ4DIFF operation when it won
}

// planLZ4Diff finds the compressed files of an EROFS target that changed
// and have a compressed counterpart of the same path in the EROFS source,
// and computes an LZ4DIFF operation for each. An operation is kept only when
// it reproduces the file's blocks and is smaller than both the best REPLACE
// and a BROTLI_BSDIFF of the same blocks; the kept operations' destination
// blocks are returned as claimed. class marks the blocks the normal planner
// would copy or zero.
func (c *Config) planLZ4Diff(p Partition, nb int, class []uint8) ([]*unit, []bool) {
	bs := c.BlockSize
	algo, level, err := ParseLZ4DiffCompression(c.LZ4DiffCompression)
	if err != nil {
		return nil, nil
	}
	newFiles, order := erofsFiles(p.New, bs, algo, level)
	if newFiles == nil {
		return nil, nil
	}
	oldFiles, _ := erofsFiles(p.Old, bs, algo, level)
	if oldFiles == nil {
		return nil, nil
	}
	taken := make([]bool, nb)
	var cands []*lz4Candidate
	for _, path := range order {
		nf, of := newFiles[path], oldFiles[path]
		if of == nil {
			continue
		}
		changed, ok := false, true
		for _, b := range nf.blocks {
			for k := b[0]; k < b[1]; k++ {
				if k >= nb || taken[k] {
					ok = false
				} else if class[k] == clChanged {
					changed = true
				}
			}
		}
		if !ok || !changed {
			continue
		}
		for _, b := range nf.blocks {
			for k := b[0]; k < b[1]; k++ {
				taken[k] = true
			}
		}
		cands = append(cands, &lz4Candidate{old: of, new: nf})
	}
	ch := make(chan *lz4Candidate)
	var wg sync.WaitGroup
	for t := 0; t < c.Threads; t++ {
		wg.Go(func() {
			for cd := range ch {
				cd.u = c.lz4diffUnit(p, cd.old, cd.new)
			}
		})
	}
	for _, cd := range cands {
		ch <- cd
	}
	close(ch)
	wg.Wait()
	var units []*unit
	claimed := make([]bool, nb)
	for _, cd := range cands {
		if cd.u == nil {
			continue
		}
		units = append(units, cd.u)
		for _, b := range cd.new.blocks {
			for k := b[0]; k < b[1]; k++ {
				claimed[k] = true
			}
		}
	}
	return units, claimed
}

// diffOverhead is what a diff operation costs in the manifest over a
// REPLACE (src_sha256_hash and src_extents; AOSP's IsDiffOperationBetter).
func diffOverhead(srcExtents int) int { return 1 + 1 + 32 + 1 + 1 + 6*srcExtents }

// lz4diffUnit returns the LZ4DIFF operation for one file, or nil when it
// cannot be made, does not reproduce the target or is not the smallest.
func (c *Config) lz4diffUnit(p Partition, of, nf *erofsFile) *unit {
	bs := c.BlockSize
	src, dst := of.data(p.Old, bs), nf.data(p.New, bs)
	if len(src) > MaxLZ4DiffBytes || len(dst) > MaxLZ4DiffBytes {
		return nil
	}
	patch, typ := c.lz4diffPatch(src, dst, &of.info, &nf.info)
	if patch == nil {
		return nil
	}
	// The patch must apply here exactly as a device applies it.
	got, err := lz4diff.Apply(src, patch)
	if err != nil || !bytes.Equal(got, dst) {
		return nil
	}
	limit := len(patch) + diffOverhead(len(of.blocks))
	if _, blob, err := bestReplace(dst, c.Compressions); err != nil || len(blob) <= limit {
		return nil
	}
	if d, _, err := bsdiff.Diff(src, dst).EncodeSmallest(true, c.BrotliQuality); err != nil || len(d) <= len(patch) {
		return nil
	}
	op := opOf(typ)
	op.SrcExtents = of.extents()
	op.DstExtents = nf.extents()
	h := sha256.Sum256(src)
	op.SrcSha256Hash = h[:]
	return &unit{op: op, blob: patch, dstStart: nf.blocks[0][0], dstBlocks: nf.nblk}
}

// MaxLZ4DiffBytes bounds the compressed size of a file LZ4DIFF is tried on
// (AOSP's bsdiff limit, 200 MiB).
const MaxLZ4DiffBytes = 200 << 20

// lz4diffPatch is AOSP's Lz4Diff: both sides decompressed, an inner bsdiff
// (BSDF2) or, when smaller, puffdiff between them, and the destination
// block table with, for every block, the sha256 of what re-compressing the
// patched data gives and, where that differs from the real block, a
// BSDIFF40 postfix patch turning one into the other.
func (c *Config) lz4diffPatch(src, dst []byte, si, di *lz4diff.Info) ([]byte, metadata.InstallOperation_Type) {
	oldU, err := lz4diff.Decompress(src, si)
	if err != nil {
		return nil, 0
	}
	newU, err := lz4diff.Decompress(dst, di)
	if err != nil {
		return nil, 0
	}
	inner, _, err := bsdiff.Diff(oldU, newU).EncodeSmallest(true, c.BrotliQuality)
	if err != nil {
		return nil, 0
	}
	h := &lz4diff.Header{Src: *si, Inner: lz4diff.InnerBsdiff}
	typ := metadata.InstallOperation_LZ4DIFF_BSDIFF
	if c.puffdiffOK() {
		if dd := puffin.Locate(newU, c.BlockSize); len(dd) > 0 {
			sd := puffin.Locate(oldU, c.BlockSize)
			if pp, err := puffin.Diff(oldU, newU, sd, dd, puffin.DiffOptions{BrotliQuality: c.BrotliQuality}); err == nil && len(pp) < len(inner) {
				inner, h.Inner, typ = pp, lz4diff.InnerPuffdiff, metadata.InstallOperation_LZ4DIFF_PUFFDIFF
			}
		}
	}
	re, err := lz4diff.Compress(newU, di)
	if err != nil || len(re) != len(dst) {
		return nil, 0
	}
	h.Dst = *di
	h.Dst.Blocks = append([]lz4diff.Block(nil), di.Blocks...)
	off := uint64(0)
	for i := range h.Dst.Blocks {
		b := &h.Dst.Blocks[i]
		r, d := re[off:off+b.CompressedLength], dst[off:off+b.CompressedLength]
		off += b.CompressedLength
		sum := sha256.Sum256(r)
		b.SHA256 = sum[:]
		if !bytes.Equal(r, d) {
			fix, err := bsdiff.Diff(r, d).Encode(bsdiff.Format{Legacy: true})
			if err != nil {
				return nil, 0
			}
			b.PostfixBspatch = fix
		}
	}
	return h.Encode(inner), typ
}
