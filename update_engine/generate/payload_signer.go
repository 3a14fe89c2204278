package generate

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/sign"
	"google.golang.org/protobuf/proto"
)

var marshal = proto.MarshalOptions{Deterministic: true}

// signaturesMessage builds a Signatures message with one entry per signer;
// each signature is zero-padded to the signer's maximum size and carries its
// real length in unpadded_signature_size (spec §2.2, §4.2). With sigs nil it
// returns the placeholder of the final size.
func signaturesMessage(signers []sign.Signer, sigs [][]byte) ([]byte, error) {
	msg := &metadata.Signatures{}
	for i, s := range signers {
		data := make([]byte, s.MaxSignatureSize())
		n := len(data)
		if sigs != nil {
			if len(sigs[i]) > len(data) {
				return nil, fmt.Errorf("generate: signature of %d bytes exceeds the key's maximum %d", len(sigs[i]), len(data))
			}
			n = copy(data, sigs[i])
		}
		msg.Signatures = append(msg.Signatures, &metadata.Signatures_Signature{
			Data:                  data,
			UnpaddedSignatureSize: proto.Uint32(uint32(n)),
		})
	}
	return marshal.Marshal(msg)
}

func signAll(signers []sign.Signer, digest []byte) ([][]byte, error) {
	var sigs [][]byte
	for _, s := range signers {
		sig, err := s.Sign(digest)
		if err != nil {
			return nil, fmt.Errorf("generate: signing: %w", err)
		}
		sigs = append(sigs, sig)
	}
	return sigs, nil
}

// assemble lays out header, manifest, metadata signature, blobs and payload
// signature (spec §1.1, §4.1):
//
//	metadata signature = sign(SHA-256([0, metadata_size)))
//	payload signature  = sign(SHA-256([0, metadata_size) ‖ blobs))
//
// Placeholders of the final sizes fix signatures_offset/size and the
// header's metadata_signature_size before anything is hashed.
func assemble(res *Result, m *metadata.DeltaArchiveManifest, blobs []byte, signers []sign.Signer) error {
	var sigLen int
	if len(signers) > 0 {
		placeholder, err := signaturesMessage(signers, nil)
		if err != nil {
			return err
		}
		sigLen = len(placeholder)
		m.SignaturesOffset = proto.Uint64(uint64(len(blobs)))
		m.SignaturesSize = proto.Uint64(uint64(sigLen))
	}
	man, err := marshal.Marshal(m)
	if err != nil {
		return fmt.Errorf("generate: encoding manifest: %w", err)
	}
	meta := make([]byte, HeaderSize, HeaderSize+len(man))
	copy(meta, Magic)
	binary.BigEndian.PutUint64(meta[4:], MajorVersion)
	binary.BigEndian.PutUint64(meta[12:], uint64(len(man)))
	binary.BigEndian.PutUint32(meta[20:], uint32(sigLen)) // metadata signature has the same layout
	meta = append(meta, man...)

	out := make([]byte, 0, len(meta)+2*sigLen+len(blobs))
	out = append(out, meta...)
	var paySig []byte
	if len(signers) > 0 {
		md := sha256.Sum256(meta)
		sigs, err := signAll(signers, md[:])
		if err != nil {
			return err
		}
		metaSig, err := signaturesMessage(signers, sigs)
		if err != nil {
			return err
		}
		h := sha256.New()
		h.Write(meta)
		h.Write(blobs)
		sigs, err = signAll(signers, h.Sum(nil))
		if err != nil {
			return err
		}
		if paySig, err = signaturesMessage(signers, sigs); err != nil {
			return err
		}
		if len(metaSig) != sigLen || len(paySig) != sigLen {
			return fmt.Errorf("generate: signature message size changed (%d, %d != %d)", len(metaSig), len(paySig), sigLen)
		}
		out = append(out, metaSig...)
	}
	out = append(out, blobs...)
	out = append(out, paySig...)
	res.Payload = out
	res.Manifest = m
	res.MetadataSize = int64(len(meta))
	res.MetadataSignatureSize = int64(sigLen)
	return nil
}
