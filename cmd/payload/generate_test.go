package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vabc-go/vabc/internal/cli"
	"github.com/vabc-go/vabc/testdata/imagegen"
)

func runGen(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := runGenerate(t.Context(), args, &out, &errb)
	return out.String() + errb.String(), err
}

// TestGenerateExtractVerify: generate (full and incremental, signed) from
// image directories, then `payload verify` and `payload extract` reproduce
// the new images byte for byte.
func TestGenerateExtractVerify(t *testing.T) {
	dir := t.TempDir()
	for _, k := range []imagegen.Kind{imagegen.Mixed, imagegen.Shuffled, imagegen.Grow} {
		old, new, err := imagegen.Raw(k, 21, 64)
		if err != nil {
			t.Fatal(err)
		}
		if err := imagegen.WritePair(dir, string(k), old, new); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := exec.LookPath("mkfs.ext4"); err == nil {
		old, new, err := imagegen.Ext4Pair(t.Context(), t.TempDir(), 4, imagegen.Ext4Options{Files: 16, MaxFile: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		imagegen.WritePair(dir, "system", old, new)
	}
	cases := map[string][]string{
		"full-rsa":     {"--key", filepath.Join(keyDir, "rsa2048.key")},
		"full-ec-zstd": {"--key", filepath.Join(keyDir, "ec.key"), "--compression", "zstd,xz"},
		"inc-rsa4096-vabc": {"--source", filepath.Join(dir, "old"), "--key", filepath.Join(keyDir, "rsa4096.key"),
			"--vabc", "--cow-version", "3", "--compression-factor", "64K"},
		"inc-ec-minor4": {"--old", filepath.Join(dir, "old"), "--key", filepath.Join(keyDir, "ec.key"), "--minor", "4", "--chunk", "64K"},
	}
	pubs := map[string]string{
		"full-rsa": filepath.Join(keyDir, "rsa2048.x509.pem"), "full-ec-zstd": filepath.Join(keyDir, "ec.pub.pem"),
		"inc-rsa4096-vabc": filepath.Join(keyDir, "rsa4096.pub.pem"), "inc-ec-minor4": filepath.Join(keyDir, "ec.pub.pem"),
	}
	for name, extra := range cases {
		t.Run(name, func(t *testing.T) {
			w := t.TempDir()
			pl := filepath.Join(w, "payload.bin")
			args := append([]string{"--target", filepath.Join(dir, "new"), "-o", pl, "--threads", "2",
				"--properties", filepath.Join(w, "payload_properties.txt"), "--zip", filepath.Join(w, "ota.zip"), "--json"}, extra...)
			out, err := runGen(t, args...)
			if err != nil {
				t.Fatalf("generate: %v\n%s", err, out)
			}
			var js map[string]any
			if err := json.Unmarshal([]byte(out), &js); err != nil {
				t.Fatalf("--json output is not one object: %v\n%s", err, out)
			}
			if o, _, err := runCmd(t, "verify", "--key", pubs[name], "--properties", filepath.Join(w, "payload_properties.txt"), pl); err != nil {
				t.Fatalf("verify: %v\n%s", err, o)
			}
			if o, _, err := runCmd(t, "verify", "--key", pubs[name], filepath.Join(w, "ota.zip")); err != nil {
				t.Fatalf("verify zip: %v\n%s", err, o)
			}
			exArgs := []string{"extract", "-o", filepath.Join(w, "out"), pl}
			if extra[0] == "--source" || extra[0] == "--old" {
				exArgs = []string{"extract", "-o", filepath.Join(w, "out"), "--old", filepath.Join(dir, "old"), pl}
			}
			if o, e, err := runCmd(t, exArgs...); err != nil {
				t.Fatalf("extract: %v\n%s%s", err, o, e)
			}
			ents, _ := os.ReadDir(filepath.Join(dir, "new"))
			for _, e := range ents {
				want, _ := os.ReadFile(filepath.Join(dir, "new", e.Name()))
				got, err := os.ReadFile(filepath.Join(w, "out", e.Name()))
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("%s: extracted image differs from the target (%v)", e.Name(), err)
				}
			}
			// A flipped bit in the manifest must fail verification.
			b, _ := os.ReadFile(pl)
			b[40] ^= 4
			bad := filepath.Join(w, "bad.bin")
			os.WriteFile(bad, b, 0o644)
			if _, _, err := runCmd(t, "verify", "--key", pubs[name], bad); err == nil {
				t.Fatal("verify accepted a payload with a flipped manifest bit")
			}
		})
	}
}

func TestGenerateUsage(t *testing.T) {
	cases := map[string][]string{
		"missing target": {"-o", "x"},
		"bad chunk":      {"--target", ".", "-o", "x", "--chunk", "lots"},
		"bad comp":       {"--target", ".", "-o", "x", "--compression", "lzma"},
		"factor no vabc": {"--target", ".", "-o", "x", "--compression-factor", "64K"},
		"extra args":     {"--target", ".", "-o", "x", "stray"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := runGen(t, args...)
			if _, ok := err.(*cli.UsageError); !ok {
				t.Fatalf("err = %v, want a usage error", err)
			}
		})
	}
	if _, err := runGen(t, "--target", t.TempDir(), "-o", filepath.Join(t.TempDir(), "p.bin")); err == nil {
		t.Fatal("empty target directory accepted")
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "64K": 65536, "64k": 65536, "2MiB": 2 << 20, "2M": 2 << 20, "1G": 1 << 30, "4KiB": 4096} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1", "0", "1T"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}
