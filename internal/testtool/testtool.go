// Package testtool lets tests that compare with external reference tools
// (the xz, bzip2, bsdiff, zstd, brotli and lz4 CLIs, C zlib through python3)
// say what they need. A missing tool skips the test on a developer machine
// but fails it when CI=true, so a CI run without scripts/deps.sh cannot pass
// by silently skipping every cross-check.
package testtool

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether missing tools are failures (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// Need returns the path of the named tool, or skips (fails under CI=true)
// the test when it is not installed.
func Need(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, name+" not installed")
	}
	return p
}

// Missing reports a missing reference (a tool, a Python module): t.Fatal
// under CI=true, t.Skip otherwise.
func Missing(t testing.TB, what string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s (scripts/deps.sh installs it; CI=true makes a missing reference a failure)", what)
	}
	t.Skip(what + " (scripts/deps.sh installs it)")
}
