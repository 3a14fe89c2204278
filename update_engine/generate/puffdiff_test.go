package generate

import (
	"bytes"
	"os/exec"
	"testing"

	"github.com/vabc-go/vabc/testdata/imagegen"
	"github.com/vabc-go/vabc/update_engine/metadata"
)

// TestPuffdiffExt4: an incremental between two ext4 images full of zips and
// gzip files uses PUFFDIFF, is markedly smaller than without it, and applies
// to the exact target (ops and the merge simulation).
func TestPuffdiffExt4(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed")
	}
	old, new, err := imagegen.DeflatePair(t.Context(), t.TempDir(), 3, 6, 4)
	if err != nil {
		t.Fatal(err)
	}
	sizes := map[bool]int{}
	for _, noPuff := range []bool{false, true} {
		cfg := Config{MinorVersion: -1, Partitions: []Partition{{Name: "system", Old: old, New: new}}, Threads: 2,
			DisablePuffdiff: noPuff, VABC: &VABC{CowVersion: 3, Compression: "lz4", XOR: true}}
		res := generate(t, cfg)
		checkLayout(t, res, true)
		if got := applyPayload(t, res.Payload, map[string][]byte{"system": old}); !bytes.Equal(got["system"], new) {
			t.Fatalf("no-puffdiff=%v: incremental payload does not reproduce the image", noPuff)
		}
		simulateMerge(t, res.Manifest.Partitions[0], old, new, 4096)
		n := 0
		for _, op := range res.Manifest.Partitions[0].Operations {
			if op.GetType() == metadata.InstallOperation_PUFFDIFF {
				n++
			}
		}
		if noPuff && n != 0 {
			t.Fatalf("%d PUFFDIFF ops with DisablePuffdiff", n)
		}
		if !noPuff && n == 0 {
			t.Fatal("no PUFFDIFF op in an image full of zips and gzip files")
		}
		sizes[noPuff] = len(res.Payload)
		t.Logf("DisablePuffdiff=%v: %d bytes, %d PUFFDIFF ops", noPuff, len(res.Payload), n)
	}
	if sizes[false]*3 > sizes[true]*2 {
		t.Fatalf("with puffdiff %d bytes, without %d: not markedly smaller", sizes[false], sizes[true])
	}
	// Below minor 5 there is no PUFFDIFF.
	res := generate(t, Config{MinorVersion: 4, Partitions: []Partition{{Name: "system", Old: old, New: new}}})
	for _, op := range res.Manifest.Partitions[0].Operations {
		if op.GetType() == metadata.InstallOperation_PUFFDIFF {
			t.Fatal("PUFFDIFF at minor version 4")
		}
	}
}
