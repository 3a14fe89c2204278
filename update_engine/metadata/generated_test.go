package metadata

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedUpToDate regenerates update_metadata.pb.go (when protoc and
// protoc-gen-go are installed) and compares it with the committed file.
func TestGeneratedUpToDate(t *testing.T) {
	protoc, err := exec.LookPath("protoc")
	if err != nil {
		t.Skip("protoc not installed (make proto installs it)")
	}
	gen, err := exec.LookPath("protoc-gen-go")
	if err != nil {
		home, _ := os.UserHomeDir()
		gen = filepath.Join(home, "go", "bin", "protoc-gen-go")
		if _, err := os.Stat(gen); err != nil {
			t.Skip("protoc-gen-go not installed (make proto installs it)")
		}
	}
	out := t.TempDir()
	cmd := exec.Command(protoc, "--plugin=protoc-gen-go="+gen, "--go_out="+out, "--go_opt=paths=source_relative",
		"update_engine/metadata/update_metadata.proto")
	cmd.Dir = "../.."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, b)
	}
	got, err := os.ReadFile(filepath.Join(out, "update_engine/metadata/update_metadata.pb.go"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile("update_metadata.pb.go")
	if !bytes.Equal(got, want) {
		t.Fatal("update_metadata.pb.go is stale or was generated with other tool versions: run make proto")
	}
}
