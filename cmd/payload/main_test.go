package main

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vabc-go/vabc/internal/cli"
	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/payload/payloadtest"
)

const keyDir = "../../update_engine/sign/testdata"

func testPayload(t *testing.T, signed bool) (string, []byte) {
	t.Helper()
	b := payloadtest.New(4096, 0)
	data := bytes.Repeat([]byte("vabc"), 3*1024)
	b.AddOp("boot", &metadata.InstallOperation{Type: metadata.InstallOperation_REPLACE.Enum(), DstExtents: payloadtest.Ext(0, 3)}, data)
	payloadtest.SetInfo(b.Partition("boot"), data, nil)
	var raw []byte
	if signed {
		pb, err := os.ReadFile(filepath.Join(keyDir, "rsa2048.key"))
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(pb)
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		raw = b.BuildSigned(k.(crypto.Signer))
	} else {
		raw = b.Build()
	}
	path := filepath.Join(t.TempDir(), "payload.bin")
	os.WriteFile(path, raw, 0o644)
	return path, data
}

func runCmd(t *testing.T, args ...string) (string, string, error) {
	var out, errb bytes.Buffer
	err := run(t.Context(), args, &out, &errb)
	return out.String(), errb.String(), err
}

func TestInfo(t *testing.T) {
	path, _ := testPayload(t, true)
	out, _, err := runCmd(t, "info", path)
	if err != nil || !strings.Contains(out, "boot") || !strings.Contains(out, "REPLACE×1") {
		t.Fatalf("info: %v\n%s", err, out)
	}
	out, _, err = runCmd(t, "info", "--json", path)
	if err != nil {
		t.Fatal(err)
	}
	var in info
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		t.Fatal(err)
	}
	if !in.Signed || in.MajorVersion != 2 || len(in.Partitions) != 1 || in.Partitions[0].OpTypes["REPLACE"] != 1 {
		t.Fatalf("info %+v", in)
	}
}

func TestVerify(t *testing.T) {
	path, _ := testPayload(t, true)
	raw, _ := os.ReadFile(path)
	fh := sha256.Sum256(raw)
	props := filepath.Join(t.TempDir(), "payload_properties.txt")
	os.WriteFile(props, []byte(fmt.Sprintf("FILE_HASH=%s\nFILE_SIZE=%d\n", base64.StdEncoding.EncodeToString(fh[:]), len(raw))), 0o644)
	badProps := filepath.Join(t.TempDir(), "bad.txt")
	os.WriteFile(badProps, []byte(fmt.Sprintf("FILE_SIZE=%d\n", len(raw)+1)), 0o644)
	tests := []struct {
		name string
		args []string
		ok   bool
	}{
		{"cert", []string{"--key", keyDir + "/rsa2048.x509.pem"}, true},
		{"otacerts", []string{"--otacerts", keyDir + "/otacerts.zip"}, true},
		{"wrong-key", []string{"--key", keyDir + "/rsa4096.pub.pem"}, false},
		{"properties", []string{"--properties", props}, true},
		{"bad-properties", []string{"--properties", badProps}, false},
		{"no-key", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runCmd(t, append(append([]string{"verify"}, tt.args...), path)...)
			if (err == nil) != tt.ok {
				t.Fatalf("err %v\n%s", err, out)
			}
		})
	}
	out, _, err := runCmd(t, "verify", "--json", "--key", keyDir+"/rsa2048.x509.pem", path)
	if err != nil || !strings.Contains(out, `"payload_signature": "ok"`) {
		t.Fatalf("%v %s", err, out)
	}
}

func TestExtract(t *testing.T) {
	path, data := testPayload(t, false)
	dir := t.TempDir()
	out, _, err := runCmd(t, "extract", path, "-o", dir, "--threads", "2")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "boot.img"))
	if !bytes.Equal(got, data) || !strings.Contains(out, "hash ok") {
		t.Fatalf("extract output %q", out)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"bogus"}, {"info"}, {"info", "a", "b"}, {"extract", "--nope", "x"}} {
		_, _, err := runCmd(t, args...)
		if !cli.IsUsage(err) {
			t.Errorf("%v: error %v, want usage error", args, err)
		}
	}
	if _, _, err := runCmd(t, "info", "/nonexistent"); err == nil || cli.IsUsage(err) {
		t.Errorf("missing file: %v", err)
	}
}
