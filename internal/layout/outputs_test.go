package layout

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildOutput says why a tracked file looks like a build output ("" when it
// does not): an executable or object by its magic number, or a name only
// compilers and `go test -c` produce.
func buildOutput(name string, head []byte) string {
	magics := []struct {
		magic []byte
		what  string
	}{
		{[]byte("\x7fELF"), "an ELF executable or object"},
		{[]byte("!<arch>\n"), "an ar archive (static library or Go package archive)"},
		{[]byte{0xcf, 0xfa, 0xed, 0xfe}, "a Mach-O executable"},
		{[]byte{0xfe, 0xed, 0xfa, 0xcf}, "a Mach-O executable"},
		{[]byte{0xca, 0xfe, 0xba, 0xbe}, "a Mach-O universal binary"},
	}
	for _, m := range magics {
		if bytes.HasPrefix(head, m.magic) {
			return m.what
		}
	}
	if len(head) >= 0x40 && bytes.HasPrefix(head, []byte("MZ")) {
		if off := int(head[0x3c]) | int(head[0x3d])<<8; off+4 <= len(head) && string(head[off:off+4]) == "PE\x00\x00" {
			return "a Windows PE executable"
		}
	}
	base := filepath.Base(name)
	for _, ext := range []string{".o", ".ko", ".a", ".so", ".test", ".exe", ".mod.c"} {
		if strings.HasSuffix(base, ext) {
			return "a build output by its name (*" + ext + ")"
		}
	}
	switch base {
	case "modules.order", "Module.symvers":
		return "a kernel module build output"
	}
	return ""
}

func TestBuildOutputDetection(t *testing.T) {
	pe := make([]byte, 0x100)
	copy(pe, "MZ")
	pe[0x3c] = 0x80
	copy(pe[0x80:], "PE\x00\x00")
	tests := []struct {
		name string
		head []byte
		want bool
	}{
		{"cowctl", []byte("\x7fELF\x02\x01\x01"), true},
		{"kernel/dm-user/dm-user.ko", []byte("\x7fELF"), true},
		{"lib.a", []byte("!<arch>\n__.PKGDEF"), true},
		{"tool", []byte{0xcf, 0xfa, 0xed, 0xfe, 7, 0, 0, 1}, true},
		{"tool.exe", pe, true},
		{"cow.test", []byte("anything"), true},
		{"kernel/dm-user/dm-user.mod.c", []byte("#include"), true},
		{"kernel/dm-user/Module.symvers", nil, true},
		{"README.md", []byte("# vabc"), false},
		{"cow/testdata/v2_legacy.cow", []byte{0x6f, 0x43, 0x77, 0x41}, false},
		{"cow/testdata/fuzz/FuzzX/seed", []byte("go test fuzz v1\n"), false},
		{"scripts/demo.sh", []byte("#!/usr/bin/env bash"), false},
		{"testdata/mz.txt", []byte("MZ but short"), false},
	}
	for _, tc := range tests {
		if got := buildOutput(tc.name, tc.head) != ""; got != tc.want {
			t.Errorf("buildOutput(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestNoBuildOutputsTracked fails when git tracks a binary, object or other
// build output (a 9 MB cowctl ELF once sat at the repository root). It skips
// outside a git checkout (a source tarball).
func TestNoBuildOutputsTracked(t *testing.T) {
	root := filepath.Join("..", "..")
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	cmd := exec.Command("git", "ls-files", "-z")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		if _, statErr := os.Stat(filepath.Join(root, ".git")); statErr != nil {
			t.Skipf("not a git checkout: %v", err)
		}
		t.Fatalf("git ls-files: %v", err)
	}
	files := strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
	if len(files) < 10 {
		t.Fatalf("git ls-files listed %d files; expected the whole repository", len(files))
	}
	head := make([]byte, 512)
	for _, name := range files {
		f, err := os.Open(filepath.Join(root, name))
		if err != nil {
			if os.IsNotExist(err) {
				continue // deleted in the work tree, not yet committed
			}
			t.Fatal(err)
		}
		n, err := io.ReadFull(f, head)
		f.Close()
		if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
			t.Fatalf("%s: %v", name, err)
		}
		if why := buildOutput(name, head[:n]); why != "" {
			t.Errorf("%s is tracked by git but is %s: git rm --cached it and add it to .gitignore", name, why)
		}
	}
}
