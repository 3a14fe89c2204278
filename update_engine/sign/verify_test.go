package sign

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/payload"
	"github.com/vabc-go/vabc/update_engine/payload/payloadtest"
)

func signer(t *testing.T, name string) crypto.Signer {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	var k any
	switch blk.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		t.Fatal(err)
	}
	return k.(crypto.Signer)
}

func build() *payloadtest.Builder {
	b := payloadtest.New(4096, 0)
	data := make([]byte, 8192)
	for i := range data {
		data[i] = byte(i * 7)
	}
	b.AddOp("boot", &metadata.InstallOperation{Type: metadata.InstallOperation_REPLACE.Enum(), DstExtents: payloadtest.Ext(0, 2)}, data)
	payloadtest.SetInfo(b.Partition("boot"), data, nil)
	return b
}

func open(t *testing.T, raw []byte) *payload.Payload {
	t.Helper()
	p, err := payload.NewReader(bytesReaderAt(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, errors.New("EOF")
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, errors.New("EOF")
	}
	return n, nil
}

func TestVerify(t *testing.T) {
	k2048, k4096, kec := signer(t, "rsa2048.key"), signer(t, "rsa4096.key"), signer(t, "ec.key")
	pub2048 := Keys{k2048.Public()}
	certKeys, err := LoadPEM("testdata/rsa2048.x509.pem")
	if err != nil {
		t.Fatal(err)
	}
	ota, err := LoadOtacerts("testdata/otacerts.zip")
	if err != nil {
		t.Fatal(err)
	}
	pub4096, err := LoadPEM("testdata/rsa4096.pub.pem")
	if err != nil {
		t.Fatal(err)
	}
	pubEC, err := LoadPEM("testdata/ec.pub.pem")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		signers []crypto.Signer
		keys    Keys
		want    error
	}{
		{"rsa2048", []crypto.Signer{k2048}, pub2048, nil},
		{"rsa2048-cert", []crypto.Signer{k2048}, certKeys, nil},
		{"rsa2048-otacerts", []crypto.Signer{k2048}, ota, nil},
		{"rsa4096", []crypto.Signer{k4096}, pub4096, nil},
		{"ecdsa", []crypto.Signer{kec}, pubEC, nil},
		{"two-sigs-second-key", []crypto.Signer{k4096, kec}, pubEC, nil},
		{"wrong-key", []crypto.Signer{k4096}, pub2048, ErrBadSignature},
		{"ec-wrong-key", []crypto.Signer{kec}, ota, ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := build().BuildSigned(tt.signers...)
			p := open(t, raw)
			r, err := Verify(p, tt.keys)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, %v; want %v", r, err, tt.want)
			}
			if tt.want == nil && (!r.MetadataSignature || !r.PayloadSignature) {
				t.Fatalf("result %+v", r)
			}
		})
	}
}

func TestTamper(t *testing.T) {
	k := signer(t, "rsa2048.key")
	keys := Keys{k.Public()}
	raw := build().BuildSigned(k)
	p := open(t, raw)
	ms := int(p.Header.MetadataSize())
	bo := int(p.Header.BlobOffset())
	tests := []struct {
		name string
		off  int
		what string
	}{
		{"manifest-byte", ms - 3, "metadata"},
		{"metadata-signature", ms + 20, "metadata"},
		{"blob-byte", bo + 100, "payload"},
		{"payload-signature", len(raw) - 30, "payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := append([]byte{}, raw...)
			b[tt.off] ^= 1
			p, err := payload.NewReader(bytesReaderAt(b), int64(len(b)))
			if err != nil {
				return // a manifest that no longer parses is also a rejection
			}
			_, err = Verify(p, keys)
			if !errors.Is(err, ErrBadSignature) {
				t.Fatalf("error %v, want bad %s signature", err, tt.what)
			}
		})
	}
}

func TestUnsigned(t *testing.T) {
	p := open(t, build().Build())
	if _, err := Verify(p, Keys{signer(t, "rsa2048.key").Public()}); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("error %v", err)
	}
}

func TestKeyRejection(t *testing.T) {
	if _, err := LoadPEM("testdata/rsa1024.key"); err == nil {
		t.Fatal("1024-bit RSA key accepted")
	}
	if _, err := ParsePEM([]byte("not pem")); err == nil {
		t.Fatal("garbage accepted")
	}
}
