// Package erofs is a small read-only parser of EROFS images (Linux
// fs/erofs/erofs_fs.h on-disk format, as written by erofs-utils'
// mkfs.erofs), in the style of debug/elf: explicit decoding over an
// io.ReaderAt, every size and offset bounded by the image size, errors naming
// the offset.
//
// It decodes the superblock (at byte 1024), compact (32-byte) and extended
// (64-byte) inodes, directories, plain / inline / chunk-based file data, and
// the logical-cluster index maps of compressed files: the legacy full
// indexes (8 bytes per lcluster) and the compact 4- and 2-byte packs, with
// HEAD1 / HEAD2 / PLAIN / NONHEAD lcluster types, big pclusters (compressed
// block counts in the first NONHEAD) and tail-packed inline pclusters.
// Extents lists, for a compressed file, every physical cluster with the
// logical (decompressed) range it produces: what update_engine's lz4diff
// generator takes from erofs-utils (erofs_filesystem.cc). ReadFile
// decompresses LZ4 files, which lets tests check the index decoding against
// the files the image was built from.
//
// Not supported (reported with ErrUnsupported): block sizes other than the
// lcluster size, fragments and deduplicated (partially referenced)
// pclusters, multiple devices, and decompression of algorithms other than
// LZ4 or of interlaced plain pclusters.
package erofs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"

	"github.com/vabc-go/vabc/update_engine/liblz4"
)

func lz4Partial(dst, src []byte, n int) ([]byte, error) { return liblz4.DecompressPartial(dst, src, n) }

// On-disk constants (erofs_fs.h).
const (
	SuperOffset = 1024
	Magic       = 0xE0F5E1E2
	superSize   = 128

	// feature_incompat bits
	FeatureZeroPadding  = 0x01 // LZ4 data at the end of its pcluster, zeros in front
	FeatureBigPcluster  = 0x02 // also COMPR_CFGS: config records after the superblock
	FeatureChunkedFile  = 0x04
	FeatureDeviceTable  = 0x08 // also COMPR_HEAD2
	FeatureZTailpacking = 0x10
	FeatureFragments    = 0x20 // also DEDUPE

	// inode data layouts
	LayoutFlatPlain      = 0
	LayoutCompressedFull = 1
	LayoutFlatInline     = 2
	LayoutCompressedComp = 3
	LayoutChunkBased     = 4

	// directory entry file types
	TypeUnknown = 0
	TypeRegular = 1
	TypeDir     = 2
	TypeSymlink = 7

	// compression algorithms (h_algorithmtype)
	AlgLZ4     = 0
	AlgLZMA    = 1
	AlgDeflate = 2
	AlgZstd    = 3

	nullAddr = 0xFFFFFFFF
)

// lcluster types
const (
	lcPlain   = 0
	lcHead1   = 1
	lcNonhead = 2
	lcHead2   = 3
)

// z_erofs_map_header.h_advise bits
const (
	adviseCompacted2B  = 0x0001
	adviseBigPcluster1 = 0x0002
	adviseBigPcluster2 = 0x0004
	adviseInline       = 0x0008
	adviseInterlaced   = 0x0010
	adviseFragment     = 0x0020
)

// d0CblkCnt marks a NONHEAD delta[0] that holds a compressed block count.
const d0CblkCnt = 1 << 11

var (
	// ErrFormat marks malformed images.
	ErrFormat = errors.New("erofs: malformed image")
	// ErrUnsupported marks valid features this package does not decode.
	ErrUnsupported = errors.New("erofs: unsupported")
)

func bad(off int64, format string, args ...any) error {
	return fmt.Errorf("erofs: offset %d: %s: %w", off, fmt.Sprintf(format, args...), ErrFormat)
}

func unsupported(off int64, format string, args ...any) error {
	return fmt.Errorf("erofs: offset %d: %s: %w", off, fmt.Sprintf(format, args...), ErrUnsupported)
}

// Superblock is the decoded erofs_super_block.
type Superblock struct {
	Checksum        uint32
	FeatureCompat   uint32
	BlkSzBits       uint8
	ExtSlots        uint8
	RootNid         uint16
	Inodes          uint64
	BuildTime       uint64
	Blocks          uint32
	MetaBlkAddr     uint32
	XattrBlkAddr    uint32
	UUID            [16]byte
	VolumeName      [16]byte
	FeatureIncompat uint32
	// ComprAlgs is available_compr_algs (with FeatureBigPcluster, i.e.
	// COMPR_CFGS) or lz4_max_distance (without).
	ComprAlgs    uint16
	ExtraDevices uint16
	PackedNid    uint64
}

// FS is an opened image.
type FS struct {
	r     io.ReaderAt
	size  int64
	SB    Superblock
	blksz int64
}

// BlockSize is the filesystem block size.
func (fs *FS) BlockSize() int64 { return fs.blksz }

// ZeroPadding reports the lz4_0padding feature.
func (fs *FS) ZeroPadding() bool { return fs.SB.FeatureIncompat&FeatureZeroPadding != 0 }

// readAt reads n bytes at off, bounded by the image size.
func (fs *FS) readAt(off, n int64, what string) ([]byte, error) {
	if off < 0 || n < 0 || off > fs.size || n > fs.size-off {
		return nil, bad(off, "%s of %d bytes lies outside the %d-byte image", what, n, fs.size)
	}
	b := make([]byte, n)
	if _, err := fs.r.ReadAt(b, off); err != nil {
		return nil, fmt.Errorf("erofs: reading %s at offset %d: %w", what, off, err)
	}
	return b, nil
}

// Open decodes the superblock of the size-byte image in r.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	fs := &FS{r: r, size: size}
	b, err := fs.readAt(SuperOffset, superSize, "superblock")
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	if m := le.Uint32(b); m != Magic {
		return nil, bad(SuperOffset, "magic %#x, not EROFS (%#x)", m, uint32(Magic))
	}
	sb := &fs.SB
	sb.Checksum = le.Uint32(b[4:])
	sb.FeatureCompat = le.Uint32(b[8:])
	sb.BlkSzBits = b[12]
	sb.ExtSlots = b[13]
	sb.RootNid = le.Uint16(b[14:])
	sb.Inodes = le.Uint64(b[16:])
	sb.BuildTime = le.Uint64(b[24:])
	sb.Blocks = le.Uint32(b[36:])
	sb.MetaBlkAddr = le.Uint32(b[40:])
	sb.XattrBlkAddr = le.Uint32(b[44:])
	copy(sb.UUID[:], b[48:64])
	copy(sb.VolumeName[:], b[64:80])
	sb.FeatureIncompat = le.Uint32(b[80:])
	sb.ComprAlgs = le.Uint16(b[84:])
	sb.ExtraDevices = le.Uint16(b[86:])
	sb.PackedNid = le.Uint64(b[96:])
	if sb.BlkSzBits < 9 || sb.BlkSzBits > 16 {
		return nil, bad(SuperOffset+12, "block size 2^%d", sb.BlkSzBits)
	}
	fs.blksz = 1 << sb.BlkSzBits
	if need := int64(sb.Blocks) * fs.blksz; need > size {
		return nil, bad(SuperOffset+36, "superblock says %d blocks (%d bytes), the image has %d bytes", sb.Blocks, need, size)
	}
	if sb.ExtraDevices != 0 {
		return nil, unsupported(SuperOffset+86, "%d extra devices", sb.ExtraDevices)
	}
	return fs, nil
}

// Inode is one decoded on-disk inode.
type Inode struct {
	Nid        uint64
	Loc        int64 // byte offset of the inode in the image
	Extended   bool  // 64-byte erofs_inode_extended (else 32-byte compact)
	Layout     uint8
	Mode       uint16
	Nlink      uint32
	Size       uint64
	XattrCount uint16
	// U is the i_u union: raw_blkaddr (flat), compressed_blocks
	// (compressed), the chunk format (chunk-based) or rdev.
	U   uint32
	Ino uint32
}

// IsDir and friends test the S_IFMT bits of Mode.
func (i *Inode) IsDir() bool     { return i.Mode&0o170000 == 0o040000 }
func (i *Inode) IsRegular() bool { return i.Mode&0o170000 == 0o100000 }

// Compressed reports a compressed data layout.
func (i *Inode) Compressed() bool {
	return i.Layout == LayoutCompressedFull || i.Layout == LayoutCompressedComp
}

func (i *Inode) isize() int64 {
	if i.Extended {
		return 64
	}
	return 32
}

func (i *Inode) xattrSize() int64 {
	if i.XattrCount == 0 {
		return 0
	}
	return 12 + (int64(i.XattrCount)-1)*4
}

// end is the byte offset just past the inode and its inline xattrs.
func (i *Inode) end() int64 { return i.Loc + i.isize() + i.xattrSize() }

// Inode decodes the inode numbered nid.
func (fs *FS) Inode(nid uint64) (*Inode, error) {
	if nid > uint64(fs.size)/32 {
		return nil, bad(0, "inode number %d is beyond the image", nid)
	}
	loc := int64(fs.SB.MetaBlkAddr)*fs.blksz + int64(nid)*32
	b, err := fs.readAt(loc, 32, fmt.Sprintf("inode %d", nid))
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	format := le.Uint16(b)
	ino := &Inode{Nid: nid, Loc: loc, Extended: format&1 != 0, Layout: uint8(format>>1) & 7}
	if ino.Layout > LayoutChunkBased {
		return nil, bad(loc, "inode %d: data layout %d", nid, ino.Layout)
	}
	ino.XattrCount = le.Uint16(b[2:])
	ino.Mode = le.Uint16(b[4:])
	if ino.Extended {
		if b, err = fs.readAt(loc, 64, fmt.Sprintf("inode %d", nid)); err != nil {
			return nil, err
		}
		ino.Size = le.Uint64(b[8:])
		ino.U = le.Uint32(b[16:])
		ino.Ino = le.Uint32(b[20:])
		ino.Nlink = le.Uint32(b[44:])
	} else {
		ino.Nlink = uint32(le.Uint16(b[6:]))
		ino.Size = uint64(le.Uint32(b[8:]))
		ino.U = le.Uint32(b[16:])
		ino.Ino = le.Uint32(b[20:])
	}
	if ino.end() > fs.size {
		return nil, bad(loc, "inode %d with its xattrs runs past the image", nid)
	}
	return ino, nil
}

// Extent is one mapped range of a file.
type Extent struct {
	Logical    uint64 // first byte of the file this extent produces
	LogicalLen uint64 // bytes of the file it produces
	Physical   int64  // byte offset of its data in the image
	PhysLen    int64  // bytes it occupies (whole blocks unless Inline)
	// Encoded: the data is compressed with Algorithm (else stored as is).
	Encoded   bool
	Algorithm uint8
	// Inline: a tail-packed pcluster inside the inode metadata
	// (not block aligned).
	Inline bool
	// Interlaced: an uncompressed pcluster stored rotated by the
	// extent's offset within its lcluster.
	Interlaced bool
	Hole       bool // unmapped (chunk-based holes): reads as zeros
}

// Extents maps the data of a regular file or directory.
func (fs *FS) Extents(ino *Inode) ([]Extent, error) {
	if ino.Size > uint64(fs.size)*256 {
		// An LZ4 stream expands at most 255 times.
		return nil, bad(ino.Loc, "inode %d: size %d cannot come from a %d-byte image", ino.Nid, ino.Size, fs.size)
	}
	switch ino.Layout {
	case LayoutFlatPlain, LayoutFlatInline:
		return fs.flatExtents(ino)
	case LayoutChunkBased:
		return fs.chunkExtents(ino)
	default:
		return fs.compressedExtents(ino)
	}
}

func (fs *FS) flatExtents(ino *Inode) ([]Extent, error) {
	if ino.Size == 0 {
		return nil, nil
	}
	full := int64(ino.Size) / fs.blksz
	tail := int64(ino.Size) % fs.blksz
	if ino.Layout == LayoutFlatPlain && tail != 0 {
		full++
		tail = 0
	}
	var out []Extent
	if full > 0 {
		pa := int64(ino.U) * fs.blksz
		n := full * fs.blksz
		if pa > fs.size || n > fs.size-pa {
			return nil, bad(ino.Loc+16, "inode %d: %d data blocks at block %d lie outside the image", ino.Nid, full, ino.U)
		}
		ll := uint64(n)
		if ll > ino.Size {
			ll = ino.Size
		}
		out = append(out, Extent{Logical: 0, LogicalLen: ll, Physical: pa, PhysLen: n})
	}
	if tail > 0 {
		pa := ino.end()
		if pa/fs.blksz != (pa+tail-1)/fs.blksz {
			return nil, bad(pa, "inode %d: inline tail of %d bytes crosses a block boundary", ino.Nid, tail)
		}
		if pa+tail > fs.size {
			return nil, bad(pa, "inode %d: inline tail runs past the image", ino.Nid)
		}
		out = append(out, Extent{Logical: uint64(full * fs.blksz), LogicalLen: uint64(tail), Physical: pa, PhysLen: tail, Inline: true})
	}
	return out, nil
}

func (fs *FS) chunkExtents(ino *Inode) ([]Extent, error) {
	if ino.Size == 0 {
		return nil, nil
	}
	const chunkIndexes = 0x20
	bits := int64(fs.SB.BlkSzBits) + int64(ino.U&0x1f)
	if bits > 40 {
		return nil, bad(ino.Loc+16, "inode %d: chunk size 2^%d", ino.Nid, bits)
	}
	csize := int64(1) << bits
	n := (int64(ino.Size) + csize - 1) / csize
	esz := int64(4)
	if ino.U&chunkIndexes != 0 {
		esz = 8
	}
	pos := ino.end()
	if esz == 8 {
		pos = (pos + 7) &^ 7
	}
	if n > fs.size/esz {
		return nil, bad(pos, "inode %d: %d chunk entries cannot fit in the image", ino.Nid, n)
	}
	b, err := fs.readAt(pos, n*esz, fmt.Sprintf("chunk index of inode %d", ino.Nid))
	if err != nil {
		return nil, err
	}
	var out []Extent
	for i := int64(0); i < n; i++ {
		var addr uint32
		if esz == 8 {
			if dev := binary.LittleEndian.Uint16(b[i*8+2:]); dev != 0 {
				return nil, unsupported(pos+i*8, "inode %d: chunk on device %d", ino.Nid, dev)
			}
			addr = binary.LittleEndian.Uint32(b[i*8+4:])
		} else {
			addr = binary.LittleEndian.Uint32(b[i*4:])
		}
		la := uint64(i * csize)
		ll := min(uint64(csize), ino.Size-la)
		e := Extent{Logical: la, LogicalLen: ll}
		if addr == nullAddr {
			e.Hole = true
		} else {
			e.Physical = int64(addr) * fs.blksz
			e.PhysLen = (int64(ll) + fs.blksz - 1) / fs.blksz * fs.blksz
			if e.Physical > fs.size || e.PhysLen > fs.size-e.Physical {
				return nil, bad(pos+i*esz, "inode %d: chunk %d at block %d lies outside the image", ino.Nid, i, addr)
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// lcluster is one decoded logical-cluster index entry.
type lcluster struct {
	typ       uint8
	clusterof uint32 // HEAD/PLAIN: where the extent starts inside the lcluster
	pblk      uint32 // HEAD/PLAIN: first physical block of its pcluster
	cblks     uint32 // first NONHEAD of a big pcluster: its compressed block count
	off       int64  // where the entry was read
}

// mapHeader is z_erofs_map_header.
type mapHeader struct {
	idataSize    uint16
	advise       uint16
	algs         uint8
	clusterbits  uint8
	fragmentOnly bool
}

func (fs *FS) compressedExtents(ino *Inode) ([]Extent, error) {
	if ino.Size == 0 {
		return nil, nil
	}
	hpos := (ino.end() + 7) &^ 7
	hb, err := fs.readAt(hpos, 8, fmt.Sprintf("map header of inode %d", ino.Nid))
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	h := mapHeader{idataSize: le.Uint16(hb[2:]), advise: le.Uint16(hb[4:]), algs: hb[6], clusterbits: hb[7] & 7, fragmentOnly: hb[7]&0x80 != 0}
	if h.fragmentOnly || h.advise&adviseFragment != 0 {
		return nil, unsupported(hpos, "inode %d: fragment (packed inode) data", ino.Nid)
	}
	lbits := int(fs.SB.BlkSzBits) + int(h.clusterbits)
	if lbits != int(fs.SB.BlkSzBits) {
		return nil, unsupported(hpos+7, "inode %d: lcluster size 2^%d differs from the block size", ino.Nid, lbits)
	}
	L := uint64(1) << lbits
	total := (ino.Size + L - 1) / L
	var lcs []lcluster
	var idxEnd int64
	if ino.Layout == LayoutCompressedFull {
		lcs, idxEnd, err = fs.fullIndexes(ino, hpos+16, total, h)
	} else {
		lcs, idxEnd, err = fs.compactIndexes(ino, hpos+8, total, lbits, h)
	}
	if err != nil {
		return nil, err
	}
	return fs.buildExtents(ino, lcs, L, idxEnd, h)
}

func (fs *FS) fullIndexes(ino *Inode, pos int64, total uint64, h mapHeader) ([]lcluster, int64, error) {
	if total > uint64(fs.size)/8 {
		return nil, 0, bad(pos, "inode %d: %d full indexes cannot fit in the image", ino.Nid, total)
	}
	b, err := fs.readAt(pos, int64(total)*8, fmt.Sprintf("full indexes of inode %d", ino.Nid))
	if err != nil {
		return nil, 0, err
	}
	le := binary.LittleEndian
	lcs := make([]lcluster, total)
	for i := range lcs {
		e := b[i*8:]
		adv := le.Uint16(e)
		lc := &lcs[i]
		lc.off = pos + int64(i)*8
		lc.typ = uint8(adv & 3)
		if adv&0x8000 != 0 {
			return nil, 0, unsupported(lc.off, "inode %d: partially referenced (deduplicated) pcluster", ino.Nid)
		}
		if lc.typ == lcNonhead {
			d0 := le.Uint16(e[4:])
			if d0&d0CblkCnt != 0 {
				lc.cblks = uint32(d0 &^ d0CblkCnt)
				if lc.cblks == 0 {
					lc.cblks = 0xFFFFFFFF // flagged, checked in buildExtents
				}
			}
		} else {
			lc.clusterof = uint32(le.Uint16(e[2:]))
			lc.pblk = le.Uint32(e[4:])
		}
	}
	return lcs, pos + int64(total)*8, nil
}

func (fs *FS) compactIndexes(ino *Inode, ebase int64, total uint64, lbits int, h mapHeader) ([]lcluster, int64, error) {
	init4 := uint64((32 - ebase%32) / 4 & 7)
	if init4 > total {
		init4 = total
	}
	var n2 uint64
	if h.advise&adviseCompacted2B != 0 {
		if lbits != 12 {
			return nil, 0, bad(ebase-4, "inode %d: 2-byte compact indexes with 2^%d lclusters", ino.Nid, lbits)
		}
		n2 = (total - init4) / 16 * 16
	}
	rest := total - init4 - n2
	// bytes: initial 4B packs, 2B packs, then 4B packs (the last one may be
	// half used)
	nbytes := (init4+1)/2*8 + n2*2 + (rest+1)/2*8
	if nbytes > uint64(fs.size) {
		return nil, 0, bad(ebase, "inode %d: %d compact index bytes cannot fit in the image", ino.Nid, nbytes)
	}
	b, err := fs.readAt(ebase, int64(nbytes), fmt.Sprintf("compact indexes of inode %d", ino.Nid))
	if err != nil {
		return nil, 0, err
	}
	// the kernel decodes the packs with big-pcluster accounting when
	// HEAD1 pclusters may be big
	big := h.advise&adviseBigPcluster1 != 0
	lobits := max(lbits, 12)
	lcs := make([]lcluster, 0, total)
	// decodePacks decodes count entries from packs of vcnt entries at b[p:].
	decodePacks := func(p int, count uint64, vcnt, packBytes int) error {
		encodebits := (packBytes - 4) * 8 / vcnt
		for count > 0 {
			pk := b[p : p+packBytes]
			base := binary.LittleEndian.Uint32(pk[packBytes-4:])
			// Before big pclusters the base is one less than the first
			// head's block (each head adds one before it is used).
			acc := base
			k := min(count, uint64(vcnt))
			for i := 0; i < int(k); i++ {
				bit := encodebits * i
				v := binary.LittleEndian.Uint32(pk[bit/8:]) >> (bit & 7)
				lo := v & (1<<lobits - 1)
				lc := lcluster{typ: uint8(v>>lobits) & 3, off: ebase + int64(p)}
				if lc.typ == lcNonhead {
					if lo&d0CblkCnt != 0 {
						if !big {
							return bad(lc.off, "inode %d: compressed block count in a file without big pclusters", ino.Nid)
						}
						lc.cblks = lo &^ d0CblkCnt
						if lc.cblks == 0 {
							lc.cblks = 0xFFFFFFFF
						}
						acc += lc.cblks
					}
				} else {
					lc.clusterof = lo
					if !big {
						acc++
						lc.pblk = acc
					} else {
						// a head not followed in this pack by a count
						// entry is a one-block pcluster, counted here
						lc.pblk = acc
						if i+1 < int(k) {
							bit2 := encodebits * (i + 1)
							v2 := binary.LittleEndian.Uint32(pk[bit2/8:]) >> (bit2 & 7)
							switch {
							case uint8(v2>>lobits)&3 != lcNonhead:
								acc++
							case v2&d0CblkCnt == 0:
								return bad(lc.off, "inode %d: big pcluster head without a block count", ino.Nid)
							}
						}
					}
				}
				lcs = append(lcs, lc)
			}
			count -= k
			p += packBytes
		}
		return nil
	}
	p := 0
	if err := decodePacks(p, init4, 2, 8); err != nil {
		return nil, 0, err
	}
	p += int((init4 + 1) / 2 * 8)
	if err := decodePacks(p, n2, 16, 32); err != nil {
		return nil, 0, err
	}
	p += int(n2 * 2)
	if err := decodePacks(p, rest, 2, 8); err != nil {
		return nil, 0, err
	}
	return lcs, ebase + int64(nbytes), nil
}

// buildExtents turns the lcluster entries into extents.
func (fs *FS) buildExtents(ino *Inode, lcs []lcluster, L uint64, idxEnd int64, h mapHeader) ([]Extent, error) {
	if len(lcs) == 0 {
		return nil, nil
	}
	if lcs[0].typ == lcNonhead || lcs[0].clusterof != 0 {
		return nil, bad(lcs[0].off, "inode %d: first lcluster is not a head at offset 0", ino.Nid)
	}
	var out []Extent
	var idataUsed bool
	for i := 0; i < len(lcs); {
		lc := lcs[i]
		if uint64(lc.clusterof) >= L {
			return nil, bad(lc.off, "inode %d: lcluster %d: cluster offset %d ≥ lcluster size %d", ino.Nid, i, lc.clusterof, L)
		}
		la := uint64(i)*L + uint64(lc.clusterof)
		if la >= ino.Size {
			// mkfs.erofs may end the index with a head at the file size
			break
		}
		// the extent runs to the next head that starts inside the file
		j := i + 1
		for j < len(lcs) && lcs[j].typ == lcNonhead {
			j++
		}
		end := ino.Size
		if j < len(lcs) {
			end = min(end, uint64(j)*L+uint64(lcs[j].clusterof))
		}
		if end <= la {
			return nil, bad(lcs[min(j, len(lcs)-1)].off, "inode %d: empty extent at %d", ino.Nid, la)
		}
		e := Extent{Logical: la, LogicalLen: end - la}
		var bigpcl bool
		switch lc.typ {
		case lcPlain:
			bigpcl = h.advise&adviseBigPcluster2 != 0
			e.Interlaced = h.advise&adviseInterlaced != 0
		case lcHead1:
			bigpcl = h.advise&adviseBigPcluster1 != 0
			e.Encoded, e.Algorithm = true, h.algs&0xf
		case lcHead2:
			bigpcl = h.advise&adviseBigPcluster2 != 0
			e.Encoded, e.Algorithm = true, h.algs>>4
		}
		blocks := uint32(1)
		if bigpcl && i+1 < len(lcs) && lcs[i+1].typ == lcNonhead {
			if c := lcs[i+1].cblks; c != 0 {
				if c == 0xFFFFFFFF {
					return nil, bad(lcs[i+1].off, "inode %d: bad compressed block count after lcluster %d", ino.Nid, i)
				}
				blocks = c
			} else {
				return nil, bad(lcs[i+1].off, "inode %d: big pcluster at lcluster %d without a block count", ino.Nid, i)
			}
		}
		for k := i + 2; k < j; k++ {
			if lcs[k].cblks != 0 {
				return nil, bad(lcs[k].off, "inode %d: compressed block count away from its head", ino.Nid)
			}
		}
		if end == ino.Size && h.advise&adviseInline != 0 {
			// the tail pcluster is packed after the indexes
			e.Inline = true
			e.Physical = idxEnd
			e.PhysLen = int64(h.idataSize)
			if e.PhysLen == 0 || e.Physical/fs.blksz != (e.Physical+e.PhysLen-1)/fs.blksz || e.Physical+e.PhysLen > fs.size {
				return nil, bad(idxEnd, "inode %d: inline pcluster of %d bytes", ino.Nid, h.idataSize)
			}
			idataUsed = true
		} else {
			e.Physical = int64(lc.pblk) * fs.blksz
			e.PhysLen = int64(blocks) * fs.blksz
			if e.Physical > fs.size || e.PhysLen > fs.size-e.Physical {
				return nil, bad(lc.off, "inode %d: pcluster of %d blocks at block %d lies outside the image", ino.Nid, blocks, lc.pblk)
			}
		}
		if !e.Encoded && e.LogicalLen > uint64(e.PhysLen) {
			return nil, bad(lc.off, "inode %d: uncompressed extent of %d bytes in a %d-byte pcluster", ino.Nid, e.LogicalLen, e.PhysLen)
		}
		out = append(out, e)
		i = j
	}
	if h.advise&adviseInline != 0 && !idataUsed {
		return nil, bad(idxEnd, "inode %d: inline pcluster without a tail extent", ino.Nid)
	}
	return out, nil
}

// Dirent is one directory entry.
type Dirent struct {
	Name string
	Nid  uint64
	Type uint8
}

// readData returns the bytes of a file (ReadFile without the name).
func (fs *FS) readData(ino *Inode, limit uint64) ([]byte, error) {
	if ino.Size > limit {
		return nil, bad(ino.Loc, "inode %d: size %d over the limit of %d", ino.Nid, ino.Size, limit)
	}
	exts, err := fs.Extents(ino)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, min(ino.Size, uint64(fs.size)*4))
	for _, e := range exts {
		if uint64(len(out)) != e.Logical {
			return nil, bad(e.Physical, "inode %d: extent at %d after %d bytes", ino.Nid, e.Logical, len(out))
		}
		if e.Hole {
			out = append(out, make([]byte, e.LogicalLen)...)
			continue
		}
		raw, err := fs.readAt(e.Physical, e.PhysLen, fmt.Sprintf("data of inode %d", ino.Nid))
		if err != nil {
			return nil, err
		}
		if !e.Encoded {
			if e.Interlaced {
				return nil, unsupported(e.Physical, "inode %d: interlaced uncompressed pcluster", ino.Nid)
			}
			if e.LogicalLen > uint64(len(raw)) {
				return nil, bad(e.Physical, "inode %d: %d uncompressed bytes in a %d-byte pcluster", ino.Nid, e.LogicalLen, len(raw))
			}
			out = append(out, raw[:e.LogicalLen]...)
			continue
		}
		if e.Algorithm != AlgLZ4 {
			return nil, unsupported(e.Physical, "inode %d: compression algorithm %d", ino.Nid, e.Algorithm)
		}
		if fs.ZeroPadding() {
			k := 0
			for k < len(raw) && k < int(fs.blksz) && raw[k] == 0 {
				k++
			}
			raw = raw[k:]
		}
		n := len(out)
		out, err = lz4Partial(out, raw, int(e.LogicalLen))
		if err != nil {
			return nil, fmt.Errorf("erofs: inode %d: pcluster at offset %d: %w", ino.Nid, e.Physical, err)
		}
		if uint64(len(out)-n) != e.LogicalLen {
			return nil, bad(e.Physical, "inode %d: pcluster decompresses to %d bytes, want %d", ino.Nid, len(out)-n, e.LogicalLen)
		}
	}
	if uint64(len(out)) != ino.Size {
		return nil, bad(ino.Loc, "inode %d: extents cover %d of %d bytes", ino.Nid, len(out), ino.Size)
	}
	return out, nil
}

// ReadFile returns the contents of a regular file, directory or symlink, at
// most limit bytes.
func (fs *FS) ReadFile(ino *Inode, limit uint64) ([]byte, error) { return fs.readData(ino, limit) }

// maxDirSize bounds directories read by ReadDir.
const maxDirSize = 64 << 20

// ReadDir lists a directory, "." and ".." included.
func (fs *FS) ReadDir(ino *Inode) ([]Dirent, error) {
	if !ino.IsDir() {
		return nil, bad(ino.Loc, "inode %d is not a directory", ino.Nid)
	}
	data, err := fs.readData(ino, min(maxDirSize, uint64(fs.size)))
	if err != nil {
		return nil, err
	}
	var out []Dirent
	le := binary.LittleEndian
	for off := 0; off < len(data); off += int(fs.blksz) {
		blk := data[off:min(len(data), off+int(fs.blksz))]
		if len(blk) < 12 {
			return nil, bad(ino.Loc, "directory %d: block %d of %d bytes", ino.Nid, off/int(fs.blksz), len(blk))
		}
		first := int(le.Uint16(blk[8:]))
		if first < 12 || first%12 != 0 || first > len(blk) {
			return nil, bad(ino.Loc, "directory %d: block %d: first name offset %d", ino.Nid, off/int(fs.blksz), first)
		}
		n := first / 12
		for i := 0; i < n; i++ {
			d := blk[i*12:]
			nameOff := int(le.Uint16(d[8:]))
			nameEnd := len(blk)
			if i+1 < n {
				nameEnd = int(le.Uint16(blk[(i+1)*12+8:]))
			}
			if nameOff < first || nameEnd > len(blk) || nameEnd <= nameOff {
				return nil, bad(ino.Loc, "directory %d: block %d: entry %d names [%d,%d)", ino.Nid, off/int(fs.blksz), i, nameOff, nameEnd)
			}
			name := blk[nameOff:nameEnd]
			if i+1 == n {
				// the last name ends at the block end or a NUL
				for k, c := range name {
					if c == 0 {
						name = name[:k]
						break
					}
				}
			}
			if len(name) == 0 {
				return nil, bad(ino.Loc, "directory %d: empty name", ino.Nid)
			}
			out = append(out, Dirent{Name: string(name), Nid: le.Uint64(d), Type: d[10]})
		}
	}
	return out, nil
}

// File is one entry found by Walk.
type File struct {
	Path  string // slash separated, without a leading slash
	Type  uint8
	Inode *Inode
}

// maxWalk bounds the entries Walk visits.
const maxWalk = 1 << 22

// Walk visits every entry under the root directory, depth first in
// directory order, and calls fn for each (directories before their
// contents).
func (fs *FS) Walk(fn func(f File) error) error {
	root, err := fs.Inode(uint64(fs.SB.RootNid))
	if err != nil {
		return err
	}
	seen := map[uint64]bool{root.Nid: true}
	count := 0
	var walk func(dir *Inode, prefix string, depth int) error
	walk = func(dir *Inode, prefix string, depth int) error {
		if depth > 256 {
			return bad(dir.Loc, "directories nested deeper than 256")
		}
		ents, err := fs.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, d := range ents {
			if d.Name == "." || d.Name == ".." {
				continue
			}
			if count++; count > maxWalk {
				return bad(dir.Loc, "more than %d entries", maxWalk)
			}
			ino, err := fs.Inode(d.Nid)
			if err != nil {
				return fmt.Errorf("%s: %w", path.Join(prefix, d.Name), err)
			}
			p := path.Join(prefix, d.Name)
			if err := fn(File{Path: p, Type: d.Type, Inode: ino}); err != nil {
				return err
			}
			if d.Type == TypeDir {
				if seen[d.Nid] {
					return bad(ino.Loc, "directory %s (inode %d) appears twice", p, d.Nid)
				}
				seen[d.Nid] = true
				if err := walk(ino, p, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(root, "", 0)
}
