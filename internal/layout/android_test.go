package layout

import (
	"debug/elf"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestAndroidBpPrebuiltSnapuserd: Android.bp installs the `make android`
// arm64 snapuserd (and the x86_64 one for the emulator) as a prebuilt.
func TestAndroidBpPrebuiltSnapuserd(t *testing.T) {
	bp, err := os.ReadFile(filepath.Join("..", "..", "Android.bp"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)cc_prebuilt_binary \{\n    name: "vabc_snapuserd",(.*?)\n\}`).FindSubmatch(bp)
	if m == nil {
		t.Fatal("Android.bp: no cc_prebuilt_binary vabc_snapuserd (run python3 scripts/gen-androidbp.py)")
	}
	for _, want := range []string{`stem: "snapuserd"`, `"bin/linux-arm64/snapuserd"`, `"bin/linux-amd64/snapuserd"`, "check_elf_files: false", "ramdisk_available: true"} {
		if !strings.Contains(string(m[1]), want) {
			t.Errorf("Android.bp vabc_snapuserd lacks %s", want)
		}
	}
}

// TestAndroidBinaries checks what `make android` built (it runs this test
// after building; skipped when bin/linux-<arch>/ is absent): every file is a
// static executable for its architecture — no interpreter, no shared
// libraries, so it runs on Android without bionic — and snapuserd and
// snapshotctl are there.
func TestAndroidBinaries(t *testing.T) {
	bin := os.Getenv("VABC_ANDROID_BIN")
	if bin == "" {
		bin = filepath.Join("..", "..", "bin")
	}
	found := false
	for _, a := range []struct {
		dir     string
		machine elf.Machine
	}{{"linux-arm64", elf.EM_AARCH64}, {"linux-amd64", elf.EM_X86_64}} {
		dir := filepath.Join(bin, a.dir)
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		found = true
		names := map[string]bool{}
		for _, e := range entries {
			names[e.Name()] = true
			path := filepath.Join(dir, e.Name())
			f, err := elf.Open(path)
			if err != nil {
				t.Errorf("%s: %v", path, err)
				continue
			}
			if f.Machine != a.machine || f.Type != elf.ET_EXEC {
				t.Errorf("%s: %v %v, want an %v executable", path, f.Machine, f.Type, a.machine)
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
					t.Errorf("%s: has %v: not a static executable", path, p.Type)
				}
			}
			f.Close()
		}
		for _, want := range []string{"snapuserd", "snapshotctl", "cowctl", "payload"} {
			if !names[want] {
				t.Errorf("%s: no %s", dir, want)
			}
		}
	}
	if !found {
		t.Skip("no bin/linux-arm64 or bin/linux-amd64 (make android builds them)")
	}
}
