package layout

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const module = "github.com/vabc-go/vabc"

type pkg struct {
	ImportPath string
	Name       string
	Imports    []string
	CgoFiles   []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// area is the top-level directory of a module package ("cow", "kernel", …).
func area(path string) string {
	rel := strings.TrimPrefix(strings.TrimPrefix(path, module), "/")
	a, _, _ := strings.Cut(rel, "/")
	return a
}

// allowed lists, per area, which other areas it may import. Areas not listed
// (cmd, init, bench, testdata) may import anything.
var allowed = map[string][]string{
	"cow":           {"internal"},
	"kernel":        {"internal"},
	"internal":      {"internal"},
	"update_engine": {"cow", "internal"},
	"snapuserd":     {"cow", "kernel", "internal"},
}

func TestImportDirection(t *testing.T) {
	for _, p := range listPackages(t) {
		from := area(p.ImportPath)
		ok, limited := allowed[from]
		if !limited {
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			to := area(imp)
			if to == from {
				continue
			}
			permitted := false
			for _, a := range ok {
				permitted = permitted || a == to
			}
			if !permitted {
				t.Errorf("%s imports %s: %s may only import %v", p.ImportPath, imp, from, ok)
			}
		}
	}
}

func TestNoCgo(t *testing.T) {
	for _, p := range listPackages(t) {
		if len(p.CgoFiles) > 0 {
			t.Errorf("%s uses cgo in %v; vabc is pure Go", p.ImportPath, p.CgoFiles)
		}
	}
}

func TestAndroidBpListsPackages(t *testing.T) {
	bp, err := os.ReadFile(filepath.Join("..", "..", "Android.bp"))
	if err != nil {
		t.Fatal(err)
	}
	pkgPaths := map[string]bool{}
	for _, m := range regexp.MustCompile(`pkgPath:\s*"([^"]+)"`).FindAllStringSubmatch(string(bp), -1) {
		pkgPaths[m[1]] = true
	}
	binaries := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?s)blueprint_go_binary\s*\{\s*name:\s*"([^"]+)"`).FindAllStringSubmatch(string(bp), -1) {
		binaries[m[1]] = true
	}
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(p.ImportPath, module+"/")
		switch {
		case strings.HasPrefix(rel, "cmd/") && p.Name == "main":
			if name := filepath.Base(rel); !binaries[name] {
				t.Errorf("Android.bp: no blueprint_go_binary %q for %s (run python3 scripts/gen-androidbp.py)", name, p.ImportPath)
			}
		case p.Name == "main", strings.HasPrefix(rel, "internal/layout"), strings.HasPrefix(rel, "e2e"):
			// bench, fixture generators, the VM guest program and this test
			// package are not part of a device build.
		default:
			if !pkgPaths[p.ImportPath] {
				t.Errorf("Android.bp: no bootstrap_go_package with pkgPath %q (run python3 scripts/gen-androidbp.py)", p.ImportPath)
			}
		}
	}
}
