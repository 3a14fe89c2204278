package snapuserd_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/proto"
)

// TestInitMiscNames: a misc name is joined to the dm-user directory, so only
// plain names are accepted; init,../victim,… must not open (or create) a
// file outside /dev/dm-user.
func TestInitMiscNames(t *testing.T) {
	pair := sameSizePairs(41, 64)["random"]
	dir := t.TempDir()
	p := newVABPart(t, dir, "system", pair, 3, false)
	dmDir := filepath.Join(dir, "dm-user")
	if err := os.Mkdir(dmDir, 0o755); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dmDir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dmDir, "sub", "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m := snapuserd.NewManager(snapuserd.Config{
		Frontend: &snapuserd.DmUser{Dir: dmDir, Workers: 1},
		Open:     func(req proto.InitRequest) (snapuserd.Device, error) { return snapuserd.OpenSnapshot(req, nil) },
	})
	defer m.Shutdown()
	for _, misc := range []string{"../victim", "sub/x", "..", ".", "", "a\x00b", "a,b", "a\nb", strings.Repeat("x", 128)} {
		if _, err := m.InitHandler(proto.InitRequest{Misc: misc, Cow: p.cow, Backing: p.base, BasePath: p.base}); err == nil {
			t.Errorf("init with misc name %q succeeded", misc)
		}
	}
	if b, err := os.ReadFile(victim); err != nil || !bytes.Equal(b, []byte("precious")) {
		t.Fatalf("victim file changed: %q %v", b, err)
	}
	if err := proto.CheckMiscName(strings.Repeat("x", 127)); err != nil {
		t.Error(err)
	}
	if err := proto.CheckMiscName("system_b-init"); err != nil {
		t.Error(err)
	}
}

// TestInitWithPeerAccess: for a non-root client the COW, source and base
// paths are opened with that client's credentials: files it cannot read or
// write are refused, files it can access work, and the handler keeps using
// the files it opened even if a path is replaced afterwards.
func TestInitWithPeerAccess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to act with another uid's credentials")
	}
	const uid, gid = 23456, 23457
	pair := sameSizePairs(42, 64)["random"]
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} { // t.TempDir's directories are 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p := newVABPart(t, dir, "system", pair, 3, false)
	src := filepath.Join(dir, "src.img")
	if err := os.WriteFile(src, pair.Source, 0o600); err != nil {
		t.Fatal(err)
	}
	chown := func(path string, u, g int, mode os.FileMode) {
		t.Helper()
		if err := os.Chown(path, u, g); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	fe := &snapuserd.EmulatedDmUser{Workers: 1}
	m := newMergeManager(fe, snapuserd.MergeConfig{})
	defer m.Shutdown()
	peer := &proto.Peer{PID: int32(os.Getpid()), UID: uid, GID: gid, Groups: []uint32{gid + 1}}
	tests := []struct {
		name  string
		setup func()
		ok    bool
	}{
		{"root-only files", func() {
			chown(p.cow, 0, 0, 0o600)
			chown(p.base, 0, 0, 0o600)
			chown(src, 0, 0, 0o600)
		}, false},
		{"base read-only for the peer", func() {
			chown(p.cow, uid, gid, 0o600)
			chown(p.base, uid, gid, 0o400)
			chown(src, uid, gid, 0o400)
		}, false},
		{"source unreadable for the peer", func() {
			chown(p.base, uid, gid, 0o600)
			chown(src, 0, 0, 0o640)
		}, false},
		{"source readable through a supplementary group", func() { chown(src, 0, gid+1, 0o640) }, true},
	}
	for _, tc := range tests {
		tc.setup()
		_, err := m.InitHandler(proto.InitRequest{Misc: "system", Cow: p.cow, Backing: src, BasePath: p.base, Peer: peer})
		if (err == nil) != tc.ok {
			t.Fatalf("%s: init error %v, want ok=%v", tc.name, err, tc.ok)
		}
		t.Logf("%s: %v", tc.name, err)
	}
	// Replace the base path by a root-only file: the handler keeps the
	// file the peer was allowed to open.
	other := filepath.Join(dir, "other.img")
	if err := os.WriteFile(other, bytes.Repeat([]byte{0xee}, len(pair.Source)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, p.base); err != nil {
		t.Fatal(err)
	}
	if err := m.StartHandler("system"); err != nil {
		t.Fatal(err)
	}
	if err := m.InitiateMerge("system"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "merge", func() bool { return m.MergeStatus("system") == proto.StatusMergeComplete })
	if b, _ := os.ReadFile(p.base); !bytes.Equal(b, bytes.Repeat([]byte{0xee}, len(pair.Source))) {
		t.Fatal("the merge wrote the file that replaced the base path after init")
	}
	got := make([]byte, len(pair.Target))
	if _, err := fe.Target("system").ReadAt(got, 0); err != nil || !bytes.Equal(got, pair.Target) {
		t.Fatalf("served image after the merge differs from the target (%v)", err)
	}
}
