package sign

// Signing side of payload signatures (spec payload-format.md §4). The
// verification side lives in the other files of this package.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// Signer signs SHA-256 digests of payload metadata and payload data.
type Signer interface {
	// Sign returns the signature of a SHA-256 digest. For RSA this is the
	// PKCS#1 v1.5 signature (exactly MaxSignatureSize bytes); for ECDSA a DER
	// signature of at most MaxSignatureSize bytes.
	Sign(digest []byte) ([]byte, error)
	// MaxSignatureSize is the largest signature Sign can return; generators
	// zero-pad signatures to it so the Signatures message size is known
	// before signing.
	MaxSignatureSize() int
	// Public returns the public key.
	Public() crypto.PublicKey
}

// ParsePrivateKeyPEM parses an RSA (PKCS#1 or PKCS#8) or ECDSA (SEC 1 or
// PKCS#8) private key in PEM form.
func ParsePrivateKeyPEM(b []byte) (Signer, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("sign: no private key PEM block found")
		}
		var key any
		var err error
		switch blk.Type {
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(blk.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		default:
			continue // e.g. "EC PARAMETERS" before the key
		}
		if err != nil {
			return nil, fmt.Errorf("sign: parsing %s: %w", blk.Type, err)
		}
		return NewSigner(key)
	}
}

// LoadPrivateKey reads a PEM private key file.
func LoadPrivateKey(path string) (Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := ParsePrivateKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// NewSigner wraps an *rsa.PrivateKey or *ecdsa.PrivateKey. RSA keys must be
// 2048 or 4096 bits: update_engine accepts only those modulus sizes.
func NewSigner(key any) (Signer, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if n := k.Size(); n != 256 && n != 512 {
			return nil, fmt.Errorf("sign: RSA key of %d bits; update_engine accepts only 2048 or 4096", n*8)
		}
		return rsaSigner{k}, nil
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P224(), elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return nil, errors.New("sign: unsupported ECDSA curve")
		}
		return ecSigner{k}, nil
	}
	return nil, fmt.Errorf("sign: unsupported private key type %T", key)
}

type rsaSigner struct{ k *rsa.PrivateKey }

func (s rsaSigner) Sign(digest []byte) ([]byte, error) {
	return rsa.SignPKCS1v15(nil, s.k, crypto.SHA256, digest)
}
func (s rsaSigner) MaxSignatureSize() int    { return s.k.Size() }
func (s rsaSigner) Public() crypto.PublicKey { return &s.k.PublicKey }

type ecSigner struct{ k *ecdsa.PrivateKey }

// Sign produces a deterministic (RFC 6979) signature so that signing the
// same payload twice gives identical files.
func (s ecSigner) Sign(digest []byte) ([]byte, error) {
	return s.k.Sign(nil, digest, crypto.SHA256)
}

// MaxSignatureSize is the DER size of SEQUENCE{INTEGER r, INTEGER s} with
// both integers at their longest: the order's size, plus a leading zero byte
// when the order's top bit is set (P-224/256/384, not P-521).
func (s ecSigner) MaxSignatureSize() int {
	bits := s.k.Curve.Params().N.BitLen()
	n := (bits + 7) / 8
	if bits%8 == 0 {
		n++
	}
	integer := 1 + derLenSize(n) + n
	body := 2 * integer
	return 1 + derLenSize(body) + body
}
func (s ecSigner) Public() crypto.PublicKey { return &s.k.PublicKey }

func derLenSize(n int) int {
	switch {
	case n < 0x80:
		return 1
	case n < 0x100:
		return 2
	default:
		return 3
	}
}
