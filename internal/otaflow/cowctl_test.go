package otaflow

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// cowSummary is the part of `cowctl create|estimate --json` the tests use.
type cowSummary struct {
	CowVersion int            `json:"cow_version"`
	CowSize    int64          `json:"cow_size"`
	Ops        map[string]int `json:"ops"`
	Blocks     map[string]int `json:"blocks"`
}

// TestCowctlCreateApplyInPlace is issue 3 through the CLI: `cowctl estimate`
// predicts exactly what `cowctl create` writes, `cowctl verify` accepts the
// COW and rejects a wrong target and a corrupted COW, and `cowctl apply
// --in-place` turns a copy of the old image into the new one (and a rerun
// of the finished merge changes nothing).
func TestCowctlCreateApplyInPlace(t *testing.T) {
	byName := map[string]partition{}
	for _, p := range imageSet(t) {
		byName[p.name] = p
	}
	tests := []struct {
		part        string
		version     int
		compression string
		extra       []string
	}{
		{part: "system", version: 2, compression: "lz4"},
		{part: "system", version: 2, compression: "zstd"},
		{part: "system", version: 3, compression: "lz4"},
		{part: "system", version: 3, compression: "zstd", extra: []string{"--compression-factor", "16K"}},
		{part: "vendor", version: 3, compression: "zstd", extra: []string{"--xor"}},
		{part: "product", version: 2, compression: "gz"}, // shuffled blocks: copy chains and cycles
		{part: "odm", version: 3, compression: "brotli"}, // growth
		{part: "oem", version: 2, compression: "lz4"},    // shrink
	}
	for _, tc := range tests {
		name := fmt.Sprintf("%s-v%d-%s", tc.part, tc.version, tc.compression)
		if len(tc.extra) > 0 {
			name += "-" + strings.TrimLeft(tc.extra[len(tc.extra)-1], "-")
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := byName[tc.part]
			dir := t.TempDir()
			old, target := filepath.Join(dir, "old.img"), filepath.Join(dir, "new.img")
			if err := os.WriteFile(old, p.old, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(target, p.new, 0o644); err != nil {
				t.Fatal(err)
			}
			cow := filepath.Join(dir, "x.cow")
			flags := append([]string{"--source", old, "--target", target, "--cow-version", fmt.Sprint(tc.version),
				"--compression", tc.compression, "--threads", "2", "--json"}, tc.extra...)

			var est, made cowSummary
			mustJSON(t, &est, "cowctl", append([]string{"estimate"}, flags...)...)
			mustJSON(t, &made, "cowctl", append([]string{"create", "-o", cow}, flags...)...)
			st, err := os.Stat(cow)
			if err != nil {
				t.Fatal(err)
			}
			if made.CowSize != st.Size() {
				t.Errorf("create reports cow_size %d, the file has %d bytes", made.CowSize, st.Size())
			}
			if est.CowSize < st.Size() {
				t.Errorf("estimate predicts %d bytes, below the %d bytes create wrote", est.CowSize, st.Size())
			} else if est.CowSize != st.Size() {
				t.Errorf("estimate predicts %d bytes, create wrote %d (estimate claims to be exact)", est.CowSize, st.Size())
			}
			if !reflect.DeepEqual(est.Ops, made.Ops) || !reflect.DeepEqual(est.Blocks, made.Blocks) {
				t.Errorf("estimate ops %v blocks %v; create ops %v blocks %v", est.Ops, est.Blocks, made.Ops, made.Blocks)
			}
			var ins cowInspect
			mustJSON(t, &ins, "cowctl", "inspect", "--verify-merge-sequence", "--json", cow)
			if ins.MergeOrderOK == nil || !*ins.MergeOrderOK || ins.Header.MajorVersion != tc.version {
				t.Errorf("cowctl inspect: merge_order_ok %v, version %d; want true, %d", ins.MergeOrderOK, ins.Header.MajorVersion, tc.version)
			}

			mustRun(t, "cowctl", "verify", "--source", old, "--cow", cow, "--target", target)
			// A target differing in one byte of a changed block, and a COW
			// with one flipped data byte, must both fail verification.
			wrong := filepath.Join(dir, "wrong.img")
			w := append([]byte(nil), p.new...)
			pos := firstDiff(p.old, p.new)
			w[pos] ^= 0x40
			if err := os.WriteFile(wrong, w, 0o644); err != nil {
				t.Fatal(err)
			}
			if r := run(t, "cowctl", "verify", "--source", old, "--cow", cow, "--target", wrong); r.code != 1 {
				t.Errorf("cowctl verify against a target with byte %d changed: exit %d, want 1\n%s%s", pos, r.code, r.stdout, r.stderr)
			}
			corruptCOW(t, cow, filepath.Join(dir, "corrupt.cow"))
			if r := run(t, "cowctl", "verify", "--source", old, "--cow", filepath.Join(dir, "corrupt.cow"), "--target", target); r.code != 1 {
				t.Errorf("cowctl verify of a COW with a flipped data byte: exit %d, want 1\n%s%s", r.code, r.stdout, r.stderr)
			}

			// In place: the old image becomes the new one.
			size := fmt.Sprint(len(p.new))
			mustRun(t, "cowctl", "apply", "--source", old, "--cow", cow, "--in-place", "--size", size)
			sameFile(t, old, target)
			mustRun(t, "cowctl", "apply", "--source", old, "--cow", cow, "--in-place", "--size", size)
			sameFile(t, old, target)
		})
	}
}

// firstDiff returns the first byte offset where a and b differ (within the
// shorter one), or the last byte of b.
func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return len(b) - 1
}

// corruptCOW copies cow to dst with one bit flipped in the middle of the
// first Replace op's data.
func corruptCOW(t *testing.T, cow, dst string) {
	t.Helper()
	var ins struct {
		Ops []struct {
			Type       string `json:"type"`
			Source     int64  `json:"source"`
			DataLength int64  `json:"data_length"`
		} `json:"ops"`
	}
	mustJSON(t, &ins, "cowctl", "inspect", "--json", cow)
	b, err := os.ReadFile(cow)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range ins.Ops {
		if op.Type != "replace" || op.DataLength == 0 {
			continue
		}
		pos := op.Source + op.DataLength/2
		if pos >= int64(len(b)) {
			t.Fatalf("replace op data at %d+%d is past the end of %s (%d bytes)", op.Source, op.DataLength, cow, len(b))
		}
		b[pos] ^= 0x10
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("%s has no replace op to corrupt", cow)
}
