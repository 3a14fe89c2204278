package otaflow

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/vabc-go/vabc/testdata/imagegen"
)

// TestPuffdiffFlow: `payload generate` between two ext4 images full of zips
// and gzip files emits PUFFDIFF operations and a markedly smaller payload
// than with --no-puffdiff; `payload extract` and `payload apply-cow` +
// `cowctl apply` rebuild the target byte for byte from both.
func TestPuffdiffFlow(t *testing.T) {
	needExt4(t)
	root := t.TempDir()
	o, n, err := imagegen.DeflatePair(context.Background(), root, 5, 6, 4)
	if err != nil {
		t.Fatal(err)
	}
	oldDir, newDir := writeImages(t, root, []partition{{"system", o, n}})
	size := map[bool]int64{}
	for _, noPuff := range []bool{false, true} {
		dir := filepath.Join(root, fmt.Sprintf("nopuff-%v", noPuff))
		pl := filepath.Join(dir, "payload.bin")
		os.MkdirAll(dir, 0o755)
		mustRun(t, "payload", "generate", "--source", oldDir, "--target", newDir, "-o", pl, "--vabc", "--cow-version", "3",
			"--vabc-compression", "lz4", "--threads", "2", fmt.Sprintf("--no-puffdiff=%v", noPuff))
		var info struct {
			Size       int64 `json:"size"`
			Partitions []struct {
				OpTypes map[string]int `json:"op_types"`
				NewSize int64          `json:"new_size"`
			} `json:"partitions"`
		}
		mustJSON(t, &info, "payload", "info", "--json", pl)
		puff := info.Partitions[0].OpTypes["PUFFDIFF"]
		if (puff == 0) != noPuff {
			t.Fatalf("--no-puffdiff=%v: %d PUFFDIFF operations", noPuff, puff)
		}
		size[noPuff] = info.Size
		t.Logf("--no-puffdiff=%v: %d bytes, op types %v", noPuff, info.Size, info.Partitions[0].OpTypes)

		out := filepath.Join(dir, "out")
		mustRun(t, "payload", "extract", "--old", oldDir, "-o", out, pl)
		got, err := os.ReadFile(filepath.Join(out, "system.img"))
		if err != nil {
			t.Fatal(err)
		}
		sameBytes(t, "extracted system", got, n)
		cows := filepath.Join(dir, "cow")
		mustRun(t, "payload", "apply-cow", "--old", oldDir, "-o", cows, pl)
		merged := filepath.Join(dir, "merged.img")
		mustRun(t, "cowctl", "apply", "--source", filepath.Join(oldDir, "system.img"), "--cow", filepath.Join(cows, "system.cow"),
			"-o", merged, "--size", fmt.Sprint(info.Partitions[0].NewSize))
		got, err = os.ReadFile(merged)
		if err != nil {
			t.Fatal(err)
		}
		sameBytes(t, "apply-cow + cowctl apply", got, n)
	}
	if size[false]*3 > size[true]*2 {
		t.Fatalf("payload with PUFFDIFF %d bytes, without %d: not markedly smaller", size[false], size[true])
	}
}
