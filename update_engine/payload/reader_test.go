package payload_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/payload"
	"github.com/vabc-go/vabc/update_engine/payload/payloadtest"
)

func sample() *payloadtest.Builder {
	b := payloadtest.New(4096, 0)
	data := bytes.Repeat([]byte{1, 2, 3, 4}, 2048)
	b.AddOp("boot", &metadata.InstallOperation{Type: metadata.InstallOperation_REPLACE.Enum(), DstExtents: payloadtest.Ext(0, 2)}, data)
	b.AddOp("boot", &metadata.InstallOperation{Type: metadata.InstallOperation_ZERO.Enum(), DstExtents: payloadtest.Ext(2, 1)}, nil)
	payloadtest.SetInfo(b.Partition("boot"), append(data, make([]byte, 4096)...), nil)
	return b
}

func parse(raw []byte) (*payload.Payload, error) {
	return payload.NewReader(bytes.NewReader(raw), int64(len(raw)))
}

func TestParse(t *testing.T) {
	raw := sample().Build()
	p, err := parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if p.Header.Major != 2 || p.BlockSize() != 4096 || p.IsDelta() || p.Signed() {
		t.Fatalf("header %+v", p.Header)
	}
	op := p.Manifest.Partitions[0].Operations[0]
	blob, err := p.Blob(op)
	if err != nil || len(blob) != 8192 {
		t.Fatalf("blob %d %v", len(blob), err)
	}
	if h := sha256.Sum256(blob); !bytes.Equal(h[:], op.DataSha256Hash) {
		t.Fatal("blob hash")
	}
}

// assemble builds raw bytes from sample()'s manifest after mut, keeping the
// signature fields that Build clears.
func assemble(mut func(m *metadata.DeltaArchiveManifest)) []byte {
	b := sample()
	raw := b.Build()
	p, err := parse(raw)
	if err != nil {
		panic(err)
	}
	blobs := raw[p.Header.BlobOffset():]
	mut(b.Manifest)
	mb, _ := proto.Marshal(b.Manifest)
	h := make([]byte, 24)
	copy(h, "CrAU")
	binary.BigEndian.PutUint64(h[4:], 2)
	binary.BigEndian.PutUint64(h[12:], uint64(len(mb)))
	return append(append(h, mb...), blobs...)
}

func setU64(b []byte, off int, v uint64) []byte {
	b = append([]byte{}, b...)
	binary.BigEndian.PutUint64(b[off:], v)
	return b
}

func TestCorrupt(t *testing.T) {
	good := sample().Build()
	withManifest := func(mut func(m *metadata.DeltaArchiveManifest)) []byte {
		b := sample()
		mut(b.Manifest)
		return b.Build()
	}
	tests := []struct {
		name string
		raw  []byte
		want error
		msg  string
	}{
		{"empty", nil, payload.ErrCorrupt, "shorter"},
		{"magic", append([]byte("CrAX"), good[4:]...), payload.ErrCorrupt, "bad magic"},
		{"major-1", setU64(good, 4, 1), payload.ErrCorrupt, "major version"},
		{"manifest-huge", setU64(good, 12, 1<<40), payload.ErrCorrupt, "manifest size"},
		{"manifest-past-eof", setU64(good, 12, uint64(len(good))), payload.ErrCorrupt, "exceed file size"},
		{"manifest-zero", setU64(good, 12, 0), payload.ErrCorrupt, "manifest size"},
		{"metasig-past-eof", func() []byte {
			b := append([]byte{}, good...)
			binary.BigEndian.PutUint32(b[20:], uint32(len(good)))
			return b
		}(), payload.ErrCorrupt, "exceed file size"},
		{"truncated-header", good[:20], payload.ErrCorrupt, "shorter"},
		{"truncated-manifest", good[:40], payload.ErrCorrupt, "exceed file size"},
		{"truncated-blobs", good[:len(good)-100], payload.ErrCorrupt, "outside"},
		{"garbage-manifest", func() []byte {
			b := append([]byte{}, good...)
			for i := 24; i < 40; i++ {
				b[i] = 0xFF
			}
			return b
		}(), payload.ErrCorrupt, "manifest"},
		{"unknown-op", withManifest(func(m *metadata.DeltaArchiveManifest) {
			m.Partitions[0].Operations[1].Type = metadata.InstallOperation_Type(99).Enum()
		}), payload.ErrUnsupported, "partition boot op 1 (type 99): unknown op type 99"},
		{"data-offset-huge", withManifest(func(m *metadata.DeltaArchiveManifest) {
			m.Partitions[0].Operations[0].DataOffset = proto.Uint64(1 << 62)
		}), payload.ErrCorrupt, "outside"},
		{"data-length-huge", withManifest(func(m *metadata.DeltaArchiveManifest) {
			m.Partitions[0].Operations[0].DataLength = proto.Uint64(^uint64(0))
		}), payload.ErrCorrupt, "outside"},
		{"extent-overflow", withManifest(func(m *metadata.DeltaArchiveManifest) {
			m.Partitions[0].Operations[1].DstExtents = payloadtest.Ext(1<<62, 1<<62)
		}), payload.ErrCorrupt, "beyond 2^63"},
		{"block-size", withManifest(func(m *metadata.DeltaArchiveManifest) { m.BlockSize = proto.Uint32(1000) }), payload.ErrCorrupt, "block_size"},
		{"dup-partition", withManifest(func(m *metadata.DeltaArchiveManifest) {
			m.Partitions = append(m.Partitions, m.Partitions[0])
		}), payload.ErrCorrupt, "duplicate"},
		{"signature-outside", assemble(func(m *metadata.DeltaArchiveManifest) {
			m.SignaturesOffset = proto.Uint64(0)
			m.SignaturesSize = proto.Uint64(1 << 30)
		}), payload.ErrCorrupt, "payload signature"},
		{"signature-not-at-end", assemble(func(m *metadata.DeltaArchiveManifest) {
			m.SignaturesOffset = proto.Uint64(100)
			m.SignaturesSize = proto.Uint64(10)
		}), payload.ErrCorrupt, "trailing or missing"},
		{"bad-hash-len", withManifest(func(m *metadata.DeltaArchiveManifest) {
			m.Partitions[0].Operations[0].DataSha256Hash = []byte{1, 2}
		}), payload.ErrCorrupt, "data_sha256_hash"},
		{"copy-size-mismatch", withManifest(func(m *metadata.DeltaArchiveManifest) {
			m.Partitions[0].Operations[1] = &metadata.InstallOperation{Type: metadata.InstallOperation_SOURCE_COPY.Enum(),
				SrcExtents: payloadtest.Ext(0, 2), DstExtents: payloadtest.Ext(0, 3)}
		}), payload.ErrCorrupt, "SOURCE_COPY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The manifest copy in a Build() output ignores the op's data
			// fields: rebuild raw bytes where a mutation must survive.
			p, err := parse(tt.raw)
			if err == nil {
				err = validateAll(p)
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %q lacks %q", err, tt.msg)
			}
		})
	}
}

func TestOpenZipAndProperties(t *testing.T) {
	raw := sample().Build()
	p0, _ := parse(raw)
	fh := sha256.Sum256(raw)
	mh := sha256.Sum256(raw[:p0.Header.MetadataSize()])
	props := fmt.Sprintf("FILE_HASH=%s\nFILE_SIZE=%d\nMETADATA_HASH=%s\nMETADATA_SIZE=%d\n",
		base64.StdEncoding.EncodeToString(fh[:]), len(raw), base64.StdEncoding.EncodeToString(mh[:]), p0.Header.MetadataSize())
	dir := t.TempDir()
	zipPath := filepath.Join(dir, "ota.zip")
	writeZip(t, zipPath, raw, props, true)
	p, err := payload.Open(zipPath)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.ZipOffset == 0 || p.Size() != int64(len(raw)) {
		t.Fatalf("zip offset %d size %d", p.ZipOffset, p.Size())
	}
	pr, err := payload.ParseProperties(p.Properties)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckProperties(pr); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"FILE_HASH", "FILE_SIZE", "METADATA_HASH", "METADATA_SIZE"} {
		bad := payload.Properties{}
		for k, v := range pr {
			bad[k] = v
		}
		bad[key] = "AAAA"
		if err := p.CheckProperties(bad); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: %v", key, err)
		}
	}
	// A deflated payload.bin cannot be read in place.
	writeZip(t, zipPath, raw, props, false)
	if _, err := payload.Open(zipPath); !errors.Is(err, payload.ErrUnsupported) {
		t.Fatalf("deflated entry: %v", err)
	}
	if _, err := payload.ParseProperties([]byte("NOEQUALS\n")); err == nil {
		t.Fatal("bad properties line accepted")
	}
	_ = os.Remove
}

// validateAll runs the checks an applier runs after opening.
func validateAll(p *payload.Payload) error {
	if err := p.ValidateManifest(); err != nil {
		return err
	}
	for _, pu := range p.Manifest.Partitions {
		if err := p.ValidatePartition(pu, payload.Limits{}); err != nil {
			return err
		}
	}
	return nil
}
