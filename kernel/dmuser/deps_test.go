package dmuser

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportDirection keeps the kernel packages leaves: they must not import
// the COW format, the daemon, update_engine or init (style guide §6).
func TestImportDirection(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", "github.com/vabc-go/vabc/kernel/dmuser", "github.com/vabc-go/vabc/kernel/fuse").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range []string{"/cow", "/snapuserd", "/update_engine", "/init"} {
			if strings.HasPrefix(dep, "github.com/vabc-go/vabc"+bad) {
				t.Errorf("kernel package depends on %s", dep)
			}
		}
	}
}
