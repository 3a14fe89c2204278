package erofs

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestFuzzSeedsAreValid: the committed fuzz seeds are well-formed images
// (so the fuzzer starts from deep inside the parser), each with compressed
// files.
func TestFuzzSeedsAreValid(t *testing.T) {
	seeds, _ := filepath.Glob("testdata/fuzz/FuzzImage/lz4*")
	if len(seeds) < 3 {
		t.Fatalf("%d seeds", len(seeds))
	}
	for _, s := range seeds {
		raw, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitN(string(raw), "\n", 2)
		body := strings.TrimSpace(lines[1])
		q, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(body, "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if err := walkAll([]byte(q)); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
}
