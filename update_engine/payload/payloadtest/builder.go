// Package payloadtest builds small payload.bin files in memory for tests and
// benchmarks: full or delta, unsigned or signed with test keys.
package payloadtest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/vabc-go/vabc/update_engine/metadata"
)

// Builder accumulates a manifest and operation blobs.
type Builder struct {
	Manifest *metadata.DeltaArchiveManifest
	blobs    bytes.Buffer
}

// New starts a payload with the given block size and minor version.
func New(blockSize uint32, minor uint32) *Builder {
	return &Builder{Manifest: &metadata.DeltaArchiveManifest{
		BlockSize:    proto.Uint32(blockSize),
		MinorVersion: proto.Uint32(minor),
	}}
}

// Partition adds (or returns) the partition update named name.
func (b *Builder) Partition(name string) *metadata.PartitionUpdate {
	for _, pu := range b.Manifest.Partitions {
		if pu.GetPartitionName() == name {
			return pu
		}
	}
	pu := &metadata.PartitionUpdate{PartitionName: proto.String(name)}
	b.Manifest.Partitions = append(b.Manifest.Partitions, pu)
	return pu
}

// Ext builds extents from (start, num) pairs.
func Ext(pairs ...uint64) []*metadata.Extent {
	var out []*metadata.Extent
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, &metadata.Extent{StartBlock: proto.Uint64(pairs[i]), NumBlocks: proto.Uint64(pairs[i+1])})
	}
	return out
}

// AddOp appends op to partition name; data (may be nil) becomes its blob
// with data_offset, data_length and data_sha256_hash filled in.
func (b *Builder) AddOp(name string, op *metadata.InstallOperation, data []byte) *metadata.InstallOperation {
	if data != nil {
		op.DataOffset = proto.Uint64(uint64(b.blobs.Len()))
		op.DataLength = proto.Uint64(uint64(len(data)))
		h := sha256.Sum256(data)
		op.DataSha256Hash = h[:]
		b.blobs.Write(data)
	}
	pu := b.Partition(name)
	pu.Operations = append(pu.Operations, op)
	return op
}

// SetInfo records new (and, for deltas, old) partition sizes and hashes.
func SetInfo(pu *metadata.PartitionUpdate, newImg, oldImg []byte) {
	h := sha256.Sum256(newImg)
	pu.NewPartitionInfo = &metadata.PartitionInfo{Size: proto.Uint64(uint64(len(newImg))), Hash: h[:]}
	if oldImg != nil {
		h := sha256.Sum256(oldImg)
		pu.OldPartitionInfo = &metadata.PartitionInfo{Size: proto.Uint64(uint64(len(oldImg))), Hash: h[:]}
	}
}

func header(manifestLen, sigLen int) []byte {
	h := make([]byte, 24)
	copy(h, "CrAU")
	binary.BigEndian.PutUint64(h[4:], 2)
	binary.BigEndian.PutUint64(h[12:], uint64(manifestLen))
	binary.BigEndian.PutUint32(h[20:], uint32(sigLen))
	return h
}

// Build returns an unsigned payload.
func (b *Builder) Build() []byte {
	m := proto.Clone(b.Manifest).(*metadata.DeltaArchiveManifest)
	m.SignaturesOffset, m.SignaturesSize = nil, nil
	mb, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	out := header(len(mb), 0)
	out = append(out, mb...)
	return append(out, b.blobs.Bytes()...)
}

// sigSize is the fixed length of the signature data for key.
func sigSize(key crypto.Signer) int {
	switch k := key.Public().(type) {
	case *rsa.PublicKey:
		return k.Size()
	case *ecdsa.PublicKey:
		// DER SEQUENCE of two INTEGERs, each up to size+1 bytes.
		n := (k.Curve.Params().BitSize + 7) / 8
		return 2 + 2*(2+n+1) + 1
	}
	panic(fmt.Sprintf("unsupported key %T", key.Public()))
}

func sign(key crypto.Signer, digest []byte) []byte {
	sig, err := key.Sign(rand.Reader, digest, crypto.SHA256)
	if err != nil {
		panic(err)
	}
	return sig
}

// signatures serializes one Signatures message per key, each padded to the
// key's fixed size (zero data when digest is nil).
func signatures(keys []crypto.Signer, digest []byte) []byte {
	s := &metadata.Signatures{}
	for _, k := range keys {
		n := sigSize(k)
		data := make([]byte, n)
		un := n
		if digest != nil {
			sig := sign(k, digest)
			copy(data, sig)
			un = len(sig)
		}
		s.Signatures = append(s.Signatures, &metadata.Signatures_Signature{Data: data, UnpaddedSignatureSize: proto.Uint32(uint32(un))})
	}
	b, err := proto.Marshal(s)
	if err != nil {
		panic(err)
	}
	return b
}

// BuildSigned returns a payload with metadata and payload signatures by every
// key, laid out as brillo_update_payload does (spec §4).
func (b *Builder) BuildSigned(keys ...crypto.Signer) []byte {
	placeholder := signatures(keys, nil)
	m := proto.Clone(b.Manifest).(*metadata.DeltaArchiveManifest)
	m.SignaturesOffset = proto.Uint64(uint64(b.blobs.Len()))
	m.SignaturesSize = proto.Uint64(uint64(len(placeholder)))
	mb, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	meta := append(header(len(mb), len(placeholder)), mb...)
	md := sha256.Sum256(meta)
	metaSig := signatures(keys, md[:])
	ph := sha256.New()
	ph.Write(meta)
	ph.Write(b.blobs.Bytes())
	paySig := signatures(keys, ph.Sum(nil))
	if len(metaSig) != len(placeholder) || len(paySig) != len(placeholder) {
		panic("signature size changed")
	}
	out := append(meta, metaSig...)
	out = append(out, b.blobs.Bytes()...)
	return append(out, paySig...)
}
