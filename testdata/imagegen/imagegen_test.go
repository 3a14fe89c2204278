package imagegen

import (
	"bytes"
	"os/exec"
	"testing"
)

func TestRawDeterministic(t *testing.T) {
	for _, k := range RawKinds {
		t.Run(string(k), func(t *testing.T) {
			o1, n1, err := Raw(k, 42, 64)
			if err != nil {
				t.Fatal(err)
			}
			o2, n2, _ := Raw(k, 42, 64)
			if !bytes.Equal(o1, o2) || !bytes.Equal(n1, n2) {
				t.Fatal("same seed, different bytes")
			}
			o3, _, _ := Raw(k, 43, 64)
			if bytes.Equal(o1, o3) {
				t.Fatal("different seeds, same bytes")
			}
			if len(n1)%BlockSize != 0 || len(o1) != 64*BlockSize {
				t.Fatalf("sizes %d/%d not block multiples", len(o1), len(n1))
			}
			if bytes.Equal(o1, n1) {
				t.Fatal("new image equals old image")
			}
		})
	}
}

func TestExt4Deterministic(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed")
	}
	o := Ext4Options{Files: 12, MaxFile: 64 << 10}
	o1, n1, err := Ext4Pair(t.Context(), t.TempDir(), 1, o)
	if err != nil {
		t.Fatal(err)
	}
	o2, n2, err := Ext4Pair(t.Context(), t.TempDir(), 1, o)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(o1, o2) || !bytes.Equal(n1, n2) {
		t.Fatal("ext4 images differ between runs with the same seed")
	}
	if bytes.Equal(o1, n1) || len(o1) != len(n1) {
		t.Fatal("old and new ext4 images should differ and have the same size")
	}
	if string(o1[1024+56:1024+58]) != "\x53\xef" {
		t.Fatal("no ext4 superblock magic")
	}
	if path, err := exec.LookPath("e2fsck"); err == nil {
		dir := t.TempDir()
		if err := WritePair(dir, "x", o1, n1); err != nil {
			t.Fatal(err)
		}
		for _, sub := range []string{"old", "new"} {
			if out, err := exec.Command(path, "-fn", dir+"/"+sub+"/x.img").CombinedOutput(); err != nil {
				t.Fatalf("e2fsck %s: %v\n%s", sub, err, out)
			}
		}
	}
}

func TestExt4Grow(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed")
	}
	old, new, err := Ext4Pair(t.Context(), t.TempDir(), 2, Ext4Options{Files: 6, MaxFile: 16 << 10, ImageSize: 4 << 20, NewImageSize: 6 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(old) != 4<<20 || len(new) != 6<<20 {
		t.Fatalf("sizes %d, %d", len(old), len(new))
	}
}
