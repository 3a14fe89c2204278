package generate

import (
	"bytes"
	"os/exec"
	"testing"

	"github.com/vabc-go/vabc/internal/testtool"
	"github.com/vabc-go/vabc/testdata/imagegen"
	"github.com/vabc-go/vabc/update_engine/ops"
)

// TestReplaceCodecs decodes every REPLACE compression with the applier's
// decompressors and, when installed, with the reference CLI tools.
func TestReplaceCodecs(t *testing.T) {
	_, data, err := imagegen.Raw(imagegen.Mixed, 2, 40)
	if err != nil {
		t.Fatal(err)
	}
	tools := map[Compression][]string{XZ: {"xz", "-dc"}, BZ2: {"bzip2", "-dc"}, ZSTD: {"zstd", "-dc"}}
	for _, c := range []Compression{XZ, BZ2, ZSTD} {
		t.Run(string(c), func(t *testing.T) {
			blob, err := c.compress(data)
			if err != nil {
				t.Fatal(err)
			}
			if len(blob) >= len(data) {
				t.Fatalf("%s did not compress mixed data (%d ≥ %d)", c, len(blob), len(data))
			}
			r, done, err := ops.Decompressor(c.opType(), blob)
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			_, err = got.ReadFrom(r)
			done()
			if err != nil || !bytes.Equal(got.Bytes(), data) {
				t.Fatalf("ops.Decompressor: %v", err)
			}
			tool := tools[c]
			testtool.Need(t, tool[0])
			cmd := exec.Command(tool[0], tool[1:]...)
			cmd.Stdin = bytes.NewReader(blob)
			out, err := cmd.Output()
			if err != nil || !bytes.Equal(out, data) {
				t.Fatalf("%s: %v", tool[0], err)
			}
		})
	}
	typ, blob, err := bestReplace(make([]byte, 8192), nil)
	if err != nil || typ.String() != "REPLACE" || len(blob) != 8192 {
		t.Fatalf("no compressions allowed: got %s %d bytes (%v)", typ, len(blob), err)
	}
}

func TestPlainOnly(t *testing.T) {
	_, data, _ := imagegen.Raw(imagegen.Compressible, 1, 8)
	for _, comps := range [][]Compression{{}, {Plain}} {
		res, err := Generate(t.Context(), Config{MinorVersion: -1, Compressions: comps, Partitions: []Partition{{Name: "a", New: data}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range res.Manifest.Partitions[0].Operations {
			if op.GetType().String() != "REPLACE" {
				t.Fatalf("compressions %v produced %s", comps, op.GetType())
			}
		}
	}
}
