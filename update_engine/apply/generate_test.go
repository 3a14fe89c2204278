package apply

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/vabc-go/vabc/update_engine/generate"
)

// TestGeneratedPayloads extracts payloads made by update_engine/generate
// (full and incremental) and compares with the images they were made from.
func TestGeneratedPayloads(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	mk := func(blocks int) []byte {
		b := make([]byte, blocks*4096)
		for i := range b {
			b[i] = byte(rng.IntN(6))
		}
		return b
	}
	oldSys, oldBoot := mk(96), mk(8)
	newSys := append([]byte{}, oldSys...)
	copy(newSys[10*4096:], mk(5))                   // new data
	copy(newSys[40*4096:], oldSys[60*4096:70*4096]) // moved blocks
	copy(newSys[80*4096:], make([]byte, 6*4096))    // zeros
	for i := 20 * 4096; i < 30*4096; i += 50 {      // small edits: bsdiff
		newSys[i]++
	}
	newBoot := mk(8)
	for _, tc := range []struct {
		name string
		old  bool
	}{{"full", false}, {"incremental", true}} {
		t.Run(tc.name, func(t *testing.T) {
			parts := []generate.Partition{{Name: "system", New: newSys}, {Name: "boot", New: newBoot}}
			if tc.old {
				parts[0].Old, parts[1].Old = oldSys, oldBoot
			}
			res, err := generate.Generate(t.Context(), generate.Config{Partitions: parts, MinorVersion: -1, ChunkSize: 64 << 10, Threads: 2})
			if err != nil {
				t.Fatal(err)
			}
			p := openRaw(t, res.Payload)
			oldDir, out := t.TempDir(), t.TempDir()
			os.WriteFile(filepath.Join(oldDir, "system.img"), oldSys, 0o644)
			os.WriteFile(filepath.Join(oldDir, "boot.img"), oldBoot, 0o644)
			results, err := Extract(t.Context(), p, Options{OutDir: out, OldDir: oldDir, Threads: 2})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range results {
				if !r.Verified {
					t.Errorf("%s not verified", r.Name)
				}
			}
			for name, want := range map[string][]byte{"system": newSys, "boot": newBoot} {
				got, _ := os.ReadFile(filepath.Join(out, name+".img"))
				if !bytes.Equal(got, want) {
					t.Fatalf("%s differs", name)
				}
			}
		})
	}
}
