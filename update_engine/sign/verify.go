// Package sign verifies payload signatures (spec payload-format.md §4).
//
// The metadata signature covers SHA-256 of [0, metadata_size) (header and
// manifest). The payload signature covers SHA-256 of [0, metadata_size)
// followed by [metadata_size+S, blob_offset+signatures_offset): everything
// except the two signature blobs. Each Signatures message may carry several
// signatures; verification succeeds if any signature verifies with any key.
// RSA keys must be 2048 or 4096 bits (PKCS#1 v1.5, SHA-256); ECDSA
// signatures are DER, zero-padded, cut to unpadded_signature_size.
//
// Keys come from a PEM file (PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE
// blocks) or from otacerts.zip, whose entries ending in "x509.pem" are
// certificates, as on Android (/system/etc/security/otacerts.zip).
package sign

import (
	"archive/zip"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/payload"
)

var (
	// ErrUnsigned means the payload carries no signature to check.
	ErrUnsigned = errors.New("sign: payload is not signed")
	// ErrBadSignature means no signature verified with any key.
	ErrBadSignature = errors.New("sign: signature verification failed")
)

// Keys is a set of trusted public keys.
type Keys []crypto.PublicKey

func checkKey(k crypto.PublicKey) error {
	switch k := k.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n != 2048 && n != 4096 {
			return fmt.Errorf("sign: RSA key of %d bits, update_engine accepts 2048 or 4096", n)
		}
	case *ecdsa.PublicKey:
	default:
		return fmt.Errorf("sign: unsupported key type %T", k)
	}
	return nil
}

// ParsePEM reads every public key and certificate in b.
func ParsePEM(b []byte) (Keys, error) {
	var keys Keys
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		var k crypto.PublicKey
		var err error
		switch blk.Type {
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(blk.Bytes); err == nil {
				k = c.PublicKey
			}
		case "PUBLIC KEY":
			k, err = x509.ParsePKIXPublicKey(blk.Bytes)
		case "RSA PUBLIC KEY":
			k, err = x509.ParsePKCS1PublicKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			var pk *rsa.PrivateKey
			if pk, err = x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
				k = &pk.PublicKey
			}
		case "EC PRIVATE KEY":
			var pk *ecdsa.PrivateKey
			if pk, err = x509.ParseECPrivateKey(blk.Bytes); err == nil {
				k = &pk.PublicKey
			}
		case "PRIVATE KEY":
			var pk any
			if pk, err = x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
				if s, ok := pk.(crypto.Signer); ok {
					k = s.Public()
				} else {
					err = fmt.Errorf("unsupported private key %T", pk)
				}
			}
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("sign: PEM %s block: %w", blk.Type, err)
		}
		if err := checkKey(k); err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("sign: no public key or certificate in PEM data")
	}
	return keys, nil
}

// LoadPEM reads keys from a PEM file.
func LoadPEM(path string) (Keys, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParsePEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// LoadOtacerts reads every *x509.pem certificate of an otacerts.zip.
func LoadOtacerts(path string) (Keys, error) {
	zr, err := zip.OpenReader(path)
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	var keys Keys
	for _, f := range zr.File {
		if !strings.HasSuffix(f.Name, "x509.pem") {
			continue
		}
		if f.UncompressedSize64 > 1<<20 {
			return nil, fmt.Errorf("sign: %s: entry %s too large", path, f.Name)
		}
		rc, err := f.Open()
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return nil, err
		}
		k, err := ParsePEM(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, f.Name, err)
		}
		keys = append(keys, k...)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("sign: %s has no *x509.pem certificate", path)
	}
	return keys, nil
}

// VerifyDigest checks that some signature in sigs signs digest with some key.
func (ks Keys) VerifyDigest(digest []byte, sigs *metadata.Signatures) error {
	if sigs == nil || len(sigs.Signatures) == 0 {
		return ErrUnsigned
	}
	for _, s := range sigs.Signatures {
		data := s.GetData()
		if s.UnpaddedSignatureSize != nil {
			n := int(s.GetUnpaddedSignatureSize())
			if n > len(data) {
				continue
			}
			data = data[:n]
		}
		for _, k := range ks {
			switch k := k.(type) {
			case *rsa.PublicKey:
				if rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, data) == nil {
					return nil
				}
			case *ecdsa.PublicKey:
				if ecdsa.VerifyASN1(k, digest, data) {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("%w: %d signature(s), %d key(s)", ErrBadSignature, len(sigs.Signatures), len(ks))
}

// Digests returns the SHA-256 digests the metadata and payload signatures
// sign.
func Digests(p *payload.Payload) (metadataDigest, payloadDigest []byte, err error) {
	return DigestsContext(context.Background(), p)
}

// ctxReader stops a long read when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}

// DigestsContext is Digests, stopping when ctx ends (a payload is hashed
// whole: gigabytes).
func DigestsContext(ctx context.Context, p *payload.Payload) (metadataDigest, payloadDigest []byte, err error) {
	ms := p.Header.MetadataSize()
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, io.NewSectionReader(p.ReaderAt(), 0, ms)}); err != nil {
		return nil, nil, err
	}
	metadataDigest = h.Sum(nil)
	if !p.Signed() {
		return metadataDigest, nil, nil
	}
	bo := p.Header.BlobOffset()
	end := bo + int64(p.Manifest.GetSignaturesOffset())
	if _, err := io.Copy(h, ctxReader{ctx, io.NewSectionReader(p.ReaderAt(), bo, end-bo)}); err != nil {
		return nil, nil, err
	}
	return metadataDigest, h.Sum(nil), nil
}

// MetadataVerifier returns a payload.Options.VerifyMetadata hook that
// requires a metadata signature made by one of keys.
func (ks Keys) MetadataVerifier() func(digest []byte, sig *metadata.Signatures) error {
	return func(digest []byte, sig *metadata.Signatures) error {
		if sig == nil {
			return ErrUnsigned
		}
		return ks.VerifyDigest(digest, sig)
	}
}

// VerifyPayloadSignature checks the payload signature of p (everything but
// the two signature blobs), stopping when ctx ends.
func VerifyPayloadSignature(ctx context.Context, p *payload.Payload, keys Keys) error {
	if !p.Signed() {
		return fmt.Errorf("payload signature: %w", ErrUnsigned)
	}
	_, pd, err := DigestsContext(ctx, p)
	if err != nil {
		return fmt.Errorf("payload signature: %w", err)
	}
	sigs, err := p.PayloadSignatures()
	if err != nil {
		return fmt.Errorf("payload signature: %w", err)
	}
	if err := keys.VerifyDigest(pd, sigs); err != nil {
		return fmt.Errorf("payload signature: %w", err)
	}
	return nil
}

// Result reports which signatures verified.
type Result struct {
	MetadataSignature bool `json:"metadata_signature"`
	PayloadSignature  bool `json:"payload_signature"`
}

// Verify checks both the metadata and the payload signature of p. Both must
// be present and valid.
func Verify(p *payload.Payload, keys Keys) (Result, error) {
	var r Result
	md, pd, err := Digests(p)
	if err != nil {
		return r, err
	}
	if p.MetadataSignature == nil {
		return r, fmt.Errorf("metadata signature: %w", ErrUnsigned)
	}
	if err := keys.VerifyDigest(md, p.MetadataSignature); err != nil {
		return r, fmt.Errorf("metadata signature: %w", err)
	}
	r.MetadataSignature = true
	if !p.Signed() {
		return r, fmt.Errorf("payload signature: %w", ErrUnsigned)
	}
	sigs, err := p.PayloadSignatures()
	if err != nil {
		return r, err
	}
	if err := keys.VerifyDigest(pd, sigs); err != nil {
		return r, fmt.Errorf("payload signature: %w", err)
	}
	r.PayloadSignature = true
	return r, nil
}
