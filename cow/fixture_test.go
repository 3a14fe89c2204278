package cow_test

import (
	"bytes"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/cow/internal/cowfixture"
)

var rewriteFixtures = flag.Bool("rewrite-fixtures", false, "rewrite cow/testdata fixtures and their fuzz seeds")

// TestFixtures rebuilds every checked-in fixture in memory and compares it
// byte for byte (writer determinism), then parses it fully and at every
// label, verifies the merge order and decodes every payload.
func TestFixtures(t *testing.T) {
	for _, fx := range cowfixture.All() {
		t.Run(fx.Name, func(t *testing.T) {
			got, err := fx.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", fx.Name)
			if *rewriteFixtures {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (regenerate with go run ./cow/testdata/mkcow)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("rebuilt %s differs from the checked-in file (%d vs %d bytes); "+
					"if the change is intended, run go run ./cow/testdata/mkcow", fx.Name, len(got), len(want))
			}
			if fx.Name == "v2_legacy.cow" {
				if sum := fmt.Sprintf("%x", sha256.Sum256(want)); sum != cowfixture.AOSPCowV2SHA256 {
					t.Errorf("SHA-256 %s, want AOSP cow_v2's %s", sum, cowfixture.AOSPCowV2SHA256)
				}
			}
			r, err := cow.NewReader(bytes.NewReader(want), int64(len(want)), &cow.ReaderOptions{Path: path})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.VerifyMergeOps(); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, r.Header().BlockSize)
			for i, op := range r.Ops() {
				if op.Type != cow.OpReplace && op.Type != cow.OpXor {
					continue
				}
				for k := range op.Blocks() {
					if _, err := r.ReadOpData(i, buf, int(k)*len(buf)); err != nil {
						t.Fatalf("op %d block %d: %v", i, k, err)
					}
				}
			}
			for _, l := range fx.Labels {
				if _, err := cow.NewReader(bytes.NewReader(want), int64(len(want)), &cow.ReaderOptions{Label: &l}); err != nil {
					t.Fatalf("label %d: %v", l, err)
				}
			}
		})
	}
}

// maxSeedSize keeps fuzz seeds small enough for the fuzzer; the 2 MiB
// legacy fixture (mostly scratch zeros) is not a seed.
const maxSeedSize = 64 << 10

// TestFixtureFuzzSeeds checks that every small fixture is a seed of the
// matching parser fuzz target (testdata/fuzz/FuzzParseV2|V3/fixture-*).
func TestFixtureFuzzSeeds(t *testing.T) {
	for _, fx := range cowfixture.All() {
		b, err := fx.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > maxSeedSize {
			continue
		}
		h, err := cow.ReadHeader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		target, flags := "FuzzParseV3", byte(0)
		if h.MajorVersion < 3 {
			// FuzzParseV2 forces major 1+flags>>7: 0x80 keeps v2.
			target, flags = "FuzzParseV2", 0x80
		}
		entries := map[string]string{
			"fixture-" + fx.Name:            seedEntry(b, 0, flags),
			"fixture-" + fx.Name + "-label": seedEntry(b, fx.Labels[0], flags|1),
		}
		for name, e := range entries {
			p := filepath.Join("testdata", "fuzz", target, name)
			if *rewriteFixtures {
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(e), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := os.ReadFile(p)
			if err != nil || string(got) != e {
				t.Errorf("%s missing or stale (go test ./cow -run Fixture -rewrite-fixtures): %v", p, err)
			}
		}
	}
}

func seedEntry(b []byte, label uint64, flags byte) string {
	return fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nuint64(%d)\nbyte(%q)\n", b, label, flags)
}
