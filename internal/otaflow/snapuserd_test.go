package otaflow

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// snapuserdBinary returns the daemon to test: $OTAFLOW_SNAPUSERD when set
// (a snapuserd built elsewhere, e.g. from a branch not merged yet), else the
// one built from this module's cmd/snapuserd. It skips, naming what is
// missing, when there is none, when the host has no FUSE, or when the daemon
// lacks the -no_socket/-fuse_mount mode.
func snapuserdBinary(t *testing.T) string {
	t.Helper()
	sud := os.Getenv("OTAFLOW_SNAPUSERD")
	if sud == "" {
		sud = filepath.Join(binDir, "snapuserd")
		if _, err := os.Stat(sud); err != nil {
			t.Skip("cmd/snapuserd is not in this module yet (main has no daemon binary; set OTAFLOW_SNAPUSERD to test one built elsewhere)")
		}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE on this host (%v): snapuserd -fuse_mount needs /dev/fuse", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("fusermount3 not installed (apt-get install fuse3): needed to unmount the FUSE export")
	}
	out, _ := exec.Command(sud, "--help").CombinedOutput()
	for _, f := range []string{"no_socket", "fuse_mount"} {
		if !bytes.Contains(out, []byte(f)) {
			t.Skipf("%s --help does not list -%s: the daemon cannot serve a snapshot through FUSE without a control socket yet", sud, f)
		}
	}
	return sud
}

// TestSnapuserdFuse serves a COW made by `cowctl create` or by `payload
// apply-cow` over the old image with a real snapuserd process (`-no_socket -fuse_mount DIR
// misc,cow,backing,base`) and compares the exported file with the new image.
func TestSnapuserdFuse(t *testing.T) {
	sud := snapuserdBinary(t)
	if os.Geteuid() != 0 {
		t.Skip("mounting a FUSE file system here needs root")
	}
	byName := map[string]partition{}
	for _, p := range imageSet(t) {
		byName[p.name] = p
	}
	tests := []struct {
		part        string
		version     int
		compression string
		extra       []string
		payload     bool // the COW comes from `payload generate` + `payload apply-cow`, not cowctl create
	}{
		{part: "system", version: 2, compression: "lz4"},
		{part: "system", version: 3, compression: "lz4", payload: true},
		{part: "vendor", version: 2, compression: "gz", payload: true},
		{part: "system", version: 3, compression: "zstd"},
		{part: "vendor", version: 3, compression: "lz4", extra: []string{"--xor"}},
		{part: "product", version: 2, compression: "gz"},
	}
	for _, tc := range tests {
		name := fmt.Sprintf("%s-v%d-%s", tc.part, tc.version, tc.compression)
		if tc.payload {
			name += "-apply-cow"
		}
		t.Run(name, func(t *testing.T) {
			p := byName[tc.part]
			if len(p.old) != len(p.new) {
				t.Fatalf("%s: the snapshot has the base image's size; pick a pair of equal size", tc.part)
			}
			dir := t.TempDir()
			old, target, cow := filepath.Join(dir, "old.img"), filepath.Join(dir, "new.img"), filepath.Join(dir, "x.cow")
			if err := os.WriteFile(old, p.old, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(target, p.new, 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.payload {
				cow = payloadCOW(t, dir, tc.part, p, tc.version, tc.compression)
			} else {
				mustRun(t, "cowctl", append([]string{"create", "--source", old, "--target", target, "-o", cow,
					"--cow-version", fmt.Sprint(tc.version), "--compression", tc.compression}, tc.extra...)...)
			}
			cowBefore, err := os.ReadFile(cow)
			if err != nil {
				t.Fatal(err)
			}

			mnt := filepath.Join(dir, "mnt")
			if err := os.Mkdir(mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			misc := tc.part + "_b-user-cow-init"
			var logs bytes.Buffer
			cmd := exec.Command(sud, "-no_socket", "-socket", filepath.Join(dir, "snapuserd.sock"), "-fuse_mount", mnt,
				strings.Join([]string{misc, cow, old, old}, ","))
			cmd.Stdout, cmd.Stderr = &logs, &logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			stopped := false
			stop := func() {
				if stopped {
					return
				}
				stopped = true
				cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(10 * time.Second):
					t.Errorf("snapuserd did not exit within 10 s of SIGTERM; killing it\n%s", logs.String())
					cmd.Process.Kill()
					<-exited
				}
				if mounted(mnt) {
					if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
						t.Errorf("fusermount3 -u %s: %v: %s", mnt, err, out)
					}
				}
			}
			t.Cleanup(stop)

			exported := filepath.Join(mnt, misc)
			deadline := time.Now().Add(20 * time.Second)
			for {
				if st, err := os.Stat(exported); err == nil && st.Size() == int64(len(p.new)) {
					break
				}
				select {
				case err := <-exited:
					stopped = true
					t.Fatalf("snapuserd exited before exporting %s: %v\n%s", exported, err, logs.String())
				case <-time.After(50 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					t.Fatalf("snapuserd did not export %s with %d bytes within 20 s\n%s", exported, len(p.new), logs.String())
				}
			}
			got, err := os.ReadFile(exported)
			if err != nil {
				t.Fatalf("read %s: %v\n%s", exported, err, logs.String())
			}
			sameBytes(t, "snapshot served by snapuserd", got, p.new)
			stop()
			if mounted(mnt) {
				t.Errorf("%s is still mounted after snapuserd stopped and fusermount3 -u", mnt)
			}
			// Serving is read-only: the base image and the COW are untouched.
			oldAfter, err := os.ReadFile(old)
			if err != nil {
				t.Fatal(err)
			}
			sameBytes(t, "base image after serving", oldAfter, p.old)
			cowAfter, err := os.ReadFile(cow)
			if err != nil {
				t.Fatal(err)
			}
			sameBytes(t, "COW after serving", cowAfter, cowBefore)
		})
	}
}

// payloadCOW builds an incremental VABC payload for one partition and
// returns the COW `payload apply-cow` writes for it.
func payloadCOW(t *testing.T, dir, name string, p partition, version int, compression string) string {
	t.Helper()
	oldDir, newDir := writeImages(t, filepath.Join(dir, "payload"), []partition{{name, p.old, p.new}})
	pl := filepath.Join(dir, "payload.bin")
	mustRun(t, "payload", "generate", "--source", oldDir, "--target", newDir, "-o", pl, "--vabc",
		"--cow-version", fmt.Sprint(version), "--vabc-compression", compression, "--threads", "2")
	cows := filepath.Join(dir, "cows")
	mustRun(t, "payload", "apply-cow", "--old", oldDir, "-o", cows, "--threads", "2", pl)
	return filepath.Join(cows, name+".cow")
}

// mounted reports whether dir is a mount point in this mount namespace.
func mounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}
