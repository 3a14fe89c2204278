package main

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/payload/payloadtest"
)

func testSigner(t *testing.T) crypto.Signer {
	t.Helper()
	pb, err := os.ReadFile(filepath.Join(keyDir, "rsa2048.key"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pb)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(crypto.Signer)
}

// TestExtractTrust: with a key, the metadata signature is checked before
// the manifest is parsed and the payload signature before any output;
// failures refuse with one line and leave the output directory empty.
// Without a key a warning says so. Hashes are mandatory by default.
func TestExtractTrust(t *testing.T) {
	data := bytes.Repeat([]byte("vabc"), 3*1024)
	build := func(minor uint32, edit func(b *payloadtest.Builder)) *payloadtest.Builder {
		b := payloadtest.New(4096, minor)
		b.AddOp("boot", &metadata.InstallOperation{Type: metadata.InstallOperation_REPLACE.Enum(), DstExtents: payloadtest.Ext(0, 3)}, data)
		payloadtest.SetInfo(b.Partition("boot"), data, nil)
		if edit != nil {
			edit(b)
		}
		return b
	}
	k := testSigner(t)
	signed := build(0, nil).BuildSigned(k)
	mflip := append([]byte(nil), signed...)
	mflip[30] ^= 0xff // inside the manifest: its bytes no longer decode or verify
	dflip := append([]byte(nil), signed...)
	// The first blob byte: the metadata still verifies, the payload
	// signature does not.
	dflip[bytes.Index(dflip, data[:64])] ^= 1
	unhashed := build(0, func(b *payloadtest.Builder) { b.Manifest.Partitions[0].Operations[0].DataSha256Hash = nil }).Build()
	noNewHash := build(0, func(b *payloadtest.Builder) { b.Manifest.Partitions[0].NewPartitionInfo.Hash = nil }).Build()
	minor99 := build(99, nil).Build()
	pemKey := filepath.Join(keyDir, "rsa2048.x509.pem")
	wrongKey := filepath.Join(keyDir, "rsa4096.pub.pem")
	otacerts := filepath.Join(keyDir, "otacerts.zip")
	for _, tc := range []struct {
		name    string
		raw     []byte
		flags   []string
		wantErr string // "" = success
		warn    bool
	}{
		{"signed-key", signed, []string{"--key", pemKey}, "", false},
		{"signed-otacerts", signed, []string{"--otacerts", otacerts}, "", false},
		{"signed-no-key", signed, nil, "", true},
		{"wrong-key", signed, []string{"--key", wrongKey}, "metadata signature: sign: signature verification failed", false},
		{"unsigned-with-key", build(0, nil).Build(), []string{"--key", pemKey}, "metadata signature: sign: payload is not signed", false},
		{"manifest-tampered", mflip, []string{"--key", pemKey}, "metadata signature: sign: signature verification failed", false},
		{"blob-tampered", dflip, []string{"--key", pemKey}, "payload signature: sign: signature verification failed", false},
		{"unhashed-op", unhashed, nil, "op 0 (REPLACE): operation has data but no data_sha256_hash", true},
		{"unhashed-op-allowed", unhashed, []string{"--allow-unhashed"}, "", true},
		{"no-new-hash", noNewHash, nil, "partition boot: no new_partition_info.hash", true},
		{"full-minor-99", minor99, nil, "full payload (no old_partition_info, not partial_update) with minor_version 99", true},
		{"too-large", signed, []string{"--max-partition-size", "8K"}, "partition boot: size 12288 bytes exceeds the limit of 8192 bytes", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "payload.bin")
			if err := os.WriteFile(path, tc.raw, 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "out")
			os.Mkdir(out, 0o755)
			for _, cmd := range []string{"extract", "apply-cow"} {
				args := append(append([]string{cmd, "-o", out}, tc.flags...), path)
				_, stderr, err := runCmd(t, args...)
				if got := strings.Contains(stderr, "is not authenticated"); got != tc.warn {
					t.Errorf("%s: warning printed %v, want %v:\n%s", cmd, got, tc.warn, stderr)
				}
				if tc.wantErr == "" {
					if err != nil {
						t.Fatalf("%s: %v", cmd, err)
					}
					continue
				}
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("%s: error %v, want %q", cmd, err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("%s: reason is not one line: %q", cmd, err)
				}
				if ents, _ := os.ReadDir(out); len(ents) != 0 {
					t.Errorf("%s: refused payload left %d files in the output directory (%s)", cmd, len(ents), ents[0].Name())
				}
			}
		})
	}
}
