package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/init/state"
	"github.com/vabc-go/vabc/testdata/imagegen"
	"github.com/vabc-go/vabc/update_engine/generate"
)

// TestApplyCOWSnapshotState: the on-device install path records the COW as
// libsnapshot's image and writes the snapshot state.
func TestApplyCOWSnapshotState(t *testing.T) {
	old, nw, err := imagegen.Raw(imagegen.Mixed, 4, 40)
	if err != nil {
		t.Fatal(err)
	}
	res, err := generate.Generate(t.Context(), generate.Config{
		Partitions: []generate.Partition{{Name: "system", Old: old, New: nw}},
		ChunkSize:  16 << 10, MinorVersion: -1,
		VABC: &generate.VABC{CowVersion: 3, Compression: "lz4", XOR: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pp := filepath.Join(dir, "payload.bin")
	oldDir := filepath.Join(dir, "old")
	os.MkdirAll(oldDir, 0o755)
	os.WriteFile(pp, res.Payload, 0o644)
	os.WriteFile(filepath.Join(oldDir, "system.img"), old, 0o644)
	out := filepath.Join(dir, "gsi", "ota")
	meta := filepath.Join(dir, "metadata", "ota")
	if _, _, err := runCmd(t, "apply-cow", "--old", oldDir, "-o", out, "--snapshot-state", meta, "--target-slot", "_a", pp); err == nil {
		// _a is the target: the source defaults to _b. Fine; now the real one.
		t.Log("target _a accepted")
	}
	// A second install over an Unverified one must be refused.
	if _, _, err := runCmd(t, "apply-cow", "--old", oldDir, "-o", out, "--snapshot-state", meta, pp); err == nil {
		t.Fatal("install over an Unverified update accepted")
	}
	meta = filepath.Join(dir, "metadata2", "ota")
	out = filepath.Join(dir, "data2")
	if _, stderr, err := runCmd(t, "apply-cow", "--old", oldDir, "-o", out, "--snapshot-state", meta, "--target-slot", "_b", pp); err != nil {
		t.Fatal(err, stderr)
	}
	d := state.Dir{Path: meta}
	st, err := d.ReadUpdateStatus()
	if err != nil || st.State != state.Unverified || !st.UsingSnapuserd || !st.UserspaceSnapshots {
		t.Fatalf("state %+v %v", st, err)
	}
	if b, _ := d.ReadFile(state.SnapshotBoot); b != "_a" {
		t.Fatalf("snapshot-boot %q", b)
	}
	s, err := d.ReadSnapshot("system_b")
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(out, "system_b-cow-img.img")
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if s.State != state.SnapshotCreated || s.DeviceSize != uint64(len(nw)) || s.SnapshotSize != s.DeviceSize ||
		s.OldPartitionSize != uint64(len(old)) || s.CowFileSize != uint64(fi.Size()) || s.CowFileSize%4096 != 0 ||
		!s.UsingSnapuserd || s.CompressionAlgorithm != "lz4" {
		t.Fatalf("snapshot status %+v (image %d bytes)", s, fi.Size())
	}
	r, err := cow.Open(img, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.VerifyMergeOps(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, "system.cow")); err == nil {
		t.Fatal("system.cow left beside the image")
	}
}
