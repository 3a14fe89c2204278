package generate

import (
	"crypto/sha256"
	"fmt"

	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/verity"
	"google.golang.org/protobuf/proto"
)

// Verity lays out each partition the way AOSP verity-enabled images are
// built: the given image is the data region (the filesystem blocks); the
// generator appends a dm-verity hash tree over it and then a Reed-Solomon FEC
// region over data + tree, and the payload updates between these extended
// images (Result.Images holds them). Incremental payloads carry
// hash_tree_*/fec_* fields and no operations for the tree and FEC blocks:
// update_engine regenerates them (spec payload-format.md §3.3). Full payloads
// carry no verity fields (update_engine's PayloadGenerationConfig rejects
// them); their operations cover the tree and FEC like any other blocks.
type Verity struct {
	Algorithm string // hash_tree_algorithm: sha1, sha256 (default), sha512
	// Seed makes the salt: hash_tree_salt = SHA-256(Seed || 0 || partition
	// name) (default seed "vabc-verity"), so output stays deterministic.
	Seed     string
	FECRoots int // fec_roots, 2…24 (default 2)
}

// verityMinor is the first minor version with hash_tree_* / fec_* fields.
const verityMinor = 6

// verityLayout is where the regions of one extended image lie, in blocks.
type verityLayout struct {
	alg              string
	salt             []byte
	roots            int
	data, tree, fecN int
}

func digestSize(alg string) (int, error) {
	switch alg {
	case "sha1":
		return 20, nil
	case "sha256":
		return 32, nil
	case "sha512":
		return 64, nil
	}
	return 0, fmt.Errorf("generate: verity hash algorithm %q (want sha1, sha256 or sha512)", alg)
}

func (v *Verity) normalize() error {
	if v.Algorithm == "" {
		v.Algorithm = "sha256"
	}
	if _, err := digestSize(v.Algorithm); err != nil {
		return err
	}
	if v.Seed == "" {
		v.Seed = "vabc-verity"
	}
	if v.FECRoots == 0 {
		v.FECRoots = 2
	}
	if v.FECRoots < 2 || v.FECRoots > 24 {
		return fmt.Errorf("generate: fec_roots %d (want 2…24)", v.FECRoots)
	}
	return nil
}

func (v *Verity) salt(name string) []byte {
	h := sha256.New()
	h.Write([]byte(v.Seed))
	h.Write([]byte{0})
	h.Write([]byte(name))
	return h.Sum(nil)
}

// sliceImage is a verity.Image over a byte slice.
type sliceImage []byte

func (s sliceImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(s)) {
		return 0, fmt.Errorf("read of %d bytes at %d outside the %d-byte image", len(p), off, len(s))
	}
	return copy(p, s[off:]), nil
}

func (s sliceImage) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(s)) {
		return 0, fmt.Errorf("write of %d bytes at %d outside the %d-byte image", len(p), off, len(s))
	}
	return copy(s[off:], p), nil
}

// addVerity returns img followed by its hash tree and FEC.
func (v *Verity) addVerity(name string, img []byte, bs int) ([]byte, verityLayout, error) {
	lay := verityLayout{alg: v.Algorithm, salt: v.salt(name), roots: v.FECRoots, data: len(img) / bs}
	ds, _ := digestSize(v.Algorithm)
	if lay.data < 2 {
		return nil, lay, fmt.Errorf("generate: partition %s: %d block(s) is too small for a verity hash tree (need 2)", name, lay.data)
	}
	lay.tree = int(verity.TreeBlocks(int64(lay.data), int64(bs), ds))
	lay.fecN = int(verity.FECSize(int64(lay.data+lay.tree), int64(bs), v.FECRoots) / int64(bs))
	out := make(sliceImage, (lay.data+lay.tree+lay.fecN)*bs)
	copy(out, img)
	if _, err := verity.BuildHashTree(out, int64(bs), lay.alg, lay.salt, lay.dataExt(), lay.treeExt()); err != nil {
		return nil, lay, fmt.Errorf("generate: partition %s: %w", name, err)
	}
	if err := verity.EncodeFEC(out, int64(bs), lay.roots, lay.fecDataExt(), lay.fecExt()); err != nil {
		return nil, lay, fmt.Errorf("generate: partition %s: %w", name, err)
	}
	return out, lay, nil
}

func (l verityLayout) dataExt() verity.Extent {
	return verity.Extent{Start: 0, Num: uint64(l.data)}
}
func (l verityLayout) treeExt() verity.Extent {
	return verity.Extent{Start: uint64(l.data), Num: uint64(l.tree)}
}
func (l verityLayout) fecDataExt() verity.Extent {
	return verity.Extent{Start: 0, Num: uint64(l.data + l.tree)}
}
func (l verityLayout) fecExt() verity.Extent {
	return verity.Extent{Start: uint64(l.data + l.tree), Num: uint64(l.fecN)}
}

func pext(e verity.Extent) *metadata.Extent {
	return &metadata.Extent{StartBlock: proto.Uint64(e.Start), NumBlocks: proto.Uint64(e.Num)}
}

// setManifest fills the hash_tree_* and fec_* fields of pu.
func (l verityLayout) setManifest(pu *metadata.PartitionUpdate) {
	pu.HashTreeDataExtent = pext(l.dataExt())
	pu.HashTreeExtent = pext(l.treeExt())
	pu.HashTreeAlgorithm = proto.String(l.alg)
	pu.HashTreeSalt = l.salt
	pu.FecDataExtent = pext(l.fecDataExt())
	pu.FecExtent = pext(l.fecExt())
	pu.FecRoots = proto.Uint32(uint32(l.roots))
}
