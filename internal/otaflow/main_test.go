package otaflow

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vabc-go/vabc/testdata/imagegen"
)

// binDir holds the binaries built from ./cmd/... for this run; tmpRoot is
// the run's scratch directory for shared fixtures.
var binDir, tmpRoot string

// moduleRoot is the directory holding go.mod, relative to this package.
const moduleRoot = "../.."

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	flag.Parse()
	var err error
	tmpRoot, err = os.MkdirTemp("", "otaflow-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "otaflow:", err)
		return 1
	}
	defer os.RemoveAll(tmpRoot)
	binDir = filepath.Join(tmpRoot, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "otaflow:", err)
		return 1
	}
	// go test puts its own GOROOT/bin first in PATH.
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "otaflow:", err)
		return 1
	}
	start := time.Now()
	cmd := exec.Command(goTool, "build", "-o", binDir+string(filepath.Separator), "./cmd/...")
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "otaflow: go build ./cmd/...: %v\n%s", err, out)
		return 1
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "otaflow: built ./cmd/... in %v\n", time.Since(start).Round(time.Millisecond))
	}
	return m.Run()
}

// bin returns the path of a built binary, skipping the test when the module
// has no such command.
func bin(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(binDir, name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("cmd/%s is not in this module (no binary %s was built from ./cmd/...)", name, name)
	}
	return p
}

// result is one finished command.
type result struct {
	stdout, stderr []byte
	code           int // exit code; -1 if it did not exit normally
}

// run execs a built binary like a user would and returns its output. It fails
// the test only when the process could not be started or timed out.
func run(t *testing.T, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(t, name), args...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	r := result{stdout: so.Bytes(), stderr: se.Bytes()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s %s: timed out\nstderr: %s", name, strings.Join(args, " "), r.stderr)
	}
	return r
}

// mustRun is run requiring exit 0.
func mustRun(t *testing.T, name string, args ...string) result {
	t.Helper()
	r := run(t, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: exit %d\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// mustJSON runs a command that prints one JSON object and decodes it.
func mustJSON(t *testing.T, v any, name string, args ...string) {
	t.Helper()
	r := mustRun(t, name, args...)
	if err := json.Unmarshal(r.stdout, v); err != nil {
		t.Fatalf("%s %s: output is not one JSON object: %v\n%s", name, strings.Join(args, " "), err, r.stdout)
	}
}

// sameFile fails the test when the files at got and want differ, naming the
// first differing byte.
func sameFile(t *testing.T, got, want string) {
	t.Helper()
	g, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	w, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, got, g, w)
}

func sameBytes(t *testing.T, what string, g, w []byte) {
	t.Helper()
	if bytes.Equal(g, w) {
		return
	}
	if len(g) != len(w) {
		t.Fatalf("%s: %d bytes, want %d", what, len(g), len(w))
	}
	for i := range g {
		if g[i] != w[i] {
			t.Fatalf("%s: first difference at byte %d (block %d): %#02x, want %#02x", what, i, i/4096, g[i], w[i])
		}
	}
}

// keyPair is a signing key written as PEM files.
type keyPair struct {
	name        string
	priv, pub   string // PKCS#8 private key, PKIX public key
	otacerts    string // otacerts.zip with a self-signed certificate of the key
	wrongPublic string // another key's public half, which must not verify
}

var (
	keysOnce sync.Once
	keys     []keyPair
	keysErr  error
)

// signingKeys returns an RSA-2048 and an ECDSA P-256 key, generated once per
// run.
func signingKeys(t *testing.T) []keyPair {
	t.Helper()
	keysOnce.Do(func() {
		dir := filepath.Join(tmpRoot, "keys")
		if keysErr = os.MkdirAll(dir, 0o755); keysErr != nil {
			return
		}
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			keysErr = err
			return
		}
		ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			keysErr = err
			return
		}
		for _, k := range []struct {
			name      string
			priv, pub any
		}{{"rsa2048", rk, &rk.PublicKey}, {"ecdsa-p256", ek, &ek.PublicKey}} {
			pd, err := x509.MarshalPKCS8PrivateKey(k.priv)
			if err != nil {
				keysErr = err
				return
			}
			ud, err := x509.MarshalPKIXPublicKey(k.pub)
			if err != nil {
				keysErr = err
				return
			}
			kp := keyPair{name: k.name, priv: filepath.Join(dir, k.name+".pem"), pub: filepath.Join(dir, k.name+".pub.pem")}
			if err := os.WriteFile(kp.priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pd}), 0o600); err != nil {
				keysErr = err
				return
			}
			if err := os.WriteFile(kp.pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ud}), 0o644); err != nil {
				keysErr = err
				return
			}
			kp.otacerts = filepath.Join(dir, k.name+"-otacerts.zip")
			if keysErr = writeOtacerts(kp.otacerts, k.name, k.priv, k.pub); keysErr != nil {
				return
			}
			keys = append(keys, kp)
		}
		keys[0].wrongPublic, keys[1].wrongPublic = keys[1].pub, keys[0].pub
	})
	if keysErr != nil {
		t.Fatal(keysErr)
	}
	return keys
}

// writeOtacerts writes an otacerts.zip holding a self-signed certificate
// for the key, named like a release key (NAME.x509.pem).
func writeOtacerts(path, name string, priv, pub any) error {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "otaflow " + name},
		NotBefore:    time.Unix(1700000000, 0),
		NotAfter:     time.Unix(1700000000, 0).AddDate(30, 0, 0),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.Create(name + ".x509.pem")
	if err != nil {
		return err
	}
	if _, err := w.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// partition is one old/new image pair of an image set.
type partition struct {
	name     string
	old, new []byte
}

var (
	imagesOnce sync.Once
	images     []partition
	imagesErr  error
)

func needExt4(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install e2fsprogs; `make deps`): the ext4 image pairs need it", tool)
		}
	}
}

// imageSet returns the run's partitions: an ext4 system image with file
// edits, and small raw pairs of the kinds that stress different ops
// (moved blocks, growth, shrink, zero runs, shifted data).
func imageSet(t *testing.T) []partition {
	t.Helper()
	needExt4(t)
	imagesOnce.Do(func() {
		scratch := filepath.Join(tmpRoot, "ext4")
		if imagesErr = os.MkdirAll(scratch, 0o755); imagesErr != nil {
			return
		}
		o, n, err := imagegen.Ext4Pair(context.Background(), scratch, 7, imagegen.Ext4Options{Files: 24, MaxFile: 96 << 10, ImageSize: 3 << 20})
		if err != nil {
			imagesErr = err
			return
		}
		images = append(images, partition{"system", o, n})
		for _, k := range []struct {
			name   string
			kind   imagegen.Kind
			blocks int
		}{
			{"vendor", imagegen.Mixed, 256},
			{"product", imagegen.Shuffled, 160},
			{"odm", imagegen.Grow, 96},
			{"oem", imagegen.Shrink, 96},
			{"vbmeta", imagegen.Zeros, 64},
		} {
			o, n, err := imagegen.Raw(k.kind, 11, k.blocks)
			if err != nil {
				imagesErr = err
				return
			}
			images = append(images, partition{k.name, o, n})
		}
	})
	if imagesErr != nil {
		t.Fatal(imagesErr)
	}
	return images
}

// writeImages writes DIR/old/<p>.img and DIR/new/<p>.img.
func writeImages(t *testing.T, dir string, parts []partition) (oldDir, newDir string) {
	t.Helper()
	for _, p := range parts {
		if err := imagegen.WritePair(dir, p.name, p.old, p.new); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "old"), filepath.Join(dir, "new")
}

// TestHelpShowsExamples: the top-level --help of every binary exits 0 and
// shows usage examples that name the binary.
func TestHelpShowsExamples(t *testing.T) {
	entries, err := os.ReadDir(binDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < 4 {
		t.Fatalf("%d binaries built from ./cmd/..., want at least cowctl, payload, snapuserd, snapshotctl", len(entries))
	}
	for _, e := range entries {
		t.Run(e.Name(), func(t *testing.T) {
			out, err := exec.Command(filepath.Join(binDir, e.Name()), "--help").CombinedOutput()
			if err != nil {
				t.Fatalf("%s --help: %v\n%s", e.Name(), err, out)
			}
			_, ex, ok := strings.Cut(string(out), "examples:\n")
			if !ok || !strings.Contains(ex, "  "+e.Name()+" ") {
				t.Errorf("%s --help shows no examples of %s:\n%s", e.Name(), e.Name(), out)
			}
		})
	}
}
