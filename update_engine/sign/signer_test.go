package sign

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"testing"
)

func TestSignerSizes(t *testing.T) {
	digest := sha256.Sum256([]byte("payload"))
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	cases := map[string]struct {
		key  any
		want int
	}{
		"rsa2048": {rsaKey, 256},
		"p256":    {newSignerTestECKey(elliptic.P256()), 72},
		"p384":    {newSignerTestECKey(elliptic.P384()), 104},
		"p521":    {newSignerTestECKey(elliptic.P521()), 139},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s, err := NewSigner(c.key)
			if err != nil {
				t.Fatal(err)
			}
			if s.MaxSignatureSize() != c.want {
				t.Fatalf("MaxSignatureSize = %d, want %d", s.MaxSignatureSize(), c.want)
			}
			for i := 0; i < 20; i++ {
				d := sha256.Sum256([]byte{byte(i)})
				sig, err := s.Sign(d[:])
				if err != nil {
					t.Fatal(err)
				}
				if len(sig) > s.MaxSignatureSize() {
					t.Fatalf("signature %d > max %d", len(sig), s.MaxSignatureSize())
				}
			}
			sig, _ := s.Sign(digest[:])
			sig2, _ := s.Sign(digest[:])
			if string(sig) != string(sig2) {
				t.Fatal("signing is not deterministic")
			}
			switch pub := s.Public().(type) {
			case *rsa.PublicKey:
				if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
					t.Fatal(err)
				}
			case *ecdsa.PublicKey:
				if !ecdsa.VerifyASN1(pub, digest[:], sig) {
					t.Fatal("ecdsa verify failed")
				}
			}
		})
	}
}

func newSignerTestECKey(c elliptic.Curve) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func TestParsePEM(t *testing.T) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek := newSignerTestECKey(elliptic.P256())
	ecDER, _ := x509.MarshalECPrivateKey(ek)
	p8, _ := x509.MarshalPKCS8PrivateKey(ek)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	cases := map[string]struct {
		pem string
		ok  bool
	}{
		"pkcs1":   {string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)})), true},
		"sec1":    {"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n" + string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})), true},
		"pkcs8":   {string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})), true},
		"rsa1024": {string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(small)})), false},
		"garbage": {"not a key", false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParsePrivateKeyPEM([]byte(c.pem))
			if (err == nil) != c.ok {
				t.Fatalf("err = %v, want ok=%v", err, c.ok)
			}
		})
	}
}
