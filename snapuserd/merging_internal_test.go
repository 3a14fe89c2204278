package snapuserd

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSameDevice(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, make([]byte, 4096), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(a, link); err != nil {
		t.Fatal(err)
	}
	type tcase struct {
		name    string
		x, y    string
		same    bool
		wantErr bool
	}
	cases := []tcase{
		{"same path", a, a, true, false},
		{"symlink", a, link, true, false},
		{"different files", a, b, false, false},
		{"missing", a, filepath.Join(dir, "nope"), false, true},
	}
	// Two block device nodes of one device (as /dev/block/dm-3 and
	// /dev/dm-3), when mknod is allowed.
	n1, n2 := filepath.Join(dir, "blk1"), filepath.Join(dir, "blk2")
	dev := int(unix.Mkdev(7, 200))
	if unix.Mknod(n1, unix.S_IFBLK|0o600, dev) == nil && unix.Mknod(n2, unix.S_IFBLK|0o600, dev) == nil {
		n3 := filepath.Join(dir, "blk3")
		if unix.Mknod(n3, unix.S_IFBLK|0o600, int(unix.Mkdev(7, 201))) == nil {
			cases = append(cases, tcase{"other block device", n1, n3, false, false})
		}
		cases = append(cases, tcase{"block device nodes", n1, n2, true, false})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			same, err := sameDevice(tc.x, tc.y)
			if (err != nil) != tc.wantErr || same != tc.same {
				t.Errorf("sameDevice = %v, %v; want %v (error %v)", same, err, tc.same, tc.wantErr)
			}
		})
	}
}
