package main

import (
	"archive/zip"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func makeZip(t *testing.T, path string, files map[string]string) {
	t.Helper()
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	for i := 0; i < len(files); i++ {
		name := fmt.Sprintf("f%d", i)
		f, _ := w.Create(name)
		f.Write([]byte(files[name]))
	}
	w.Close()
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPuffdiffPuffpatch(t *testing.T) {
	dir := t.TempDir()
	old, nw := filepath.Join(dir, "old.zip"), filepath.Join(dir, "new.zip")
	files := map[string]string{}
	for i := 0; i < 6; i++ {
		files[fmt.Sprintf("f%d", i)] = strings.Repeat(fmt.Sprintf("line %d of the old archive\n", i), 300+i*50)
	}
	makeZip(t, old, files)
	files["f2"] = strings.Replace(files["f2"], "line 2 of", "line two of", 7)
	files["f5"] += "appended\n"
	makeZip(t, nw, files)
	patch, out := filepath.Join(dir, "p.puf"), filepath.Join(dir, "out.zip")
	if o, e, err := runCmd(t, "puffdiff", "--src", old, "--dst", nw, "-o", patch); err != nil {
		t.Fatalf("puffdiff: %v\n%s%s", err, o, e)
	}
	if o, e, err := runCmd(t, "puffpatch", "--src", old, "--patch", patch, "-o", out); err != nil {
		t.Fatalf("puffpatch: %v\n%s%s", err, o, e)
	}
	want, _ := os.ReadFile(nw)
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Fatal("puffpatch output differs from the new zip")
	}
	// Garbage patch: a clear error, not a panic.
	os.WriteFile(patch, []byte("PUF1\x00\x00\x00\x02\x08"), 0o644)
	if _, _, err := runCmd(t, "puffpatch", "--src", old, "--patch", patch, "-o", out); err == nil {
		t.Fatal("corrupt patch accepted")
	}
	if _, _, err := runCmd(t, "puffpatch", "--src", old); err == nil {
		t.Fatal("missing flags accepted")
	}
}
