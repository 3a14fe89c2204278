package state

import (
	"errors"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// fsOps are the file-system calls of an atomic write; tests replace them
// with a model in which unsynced data and directory entries are lost.
type fsOps interface {
	writeFile(path string, data []byte) error // create/truncate + write, no sync
	syncFile(path string) error
	rename(from, to string) error
	syncDir(dir string) error
}

type osOps struct{}

func (osOps) writeFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_CLOEXEC, 0o666)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (osOps) syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (osOps) rename(from, to string) error { return os.Rename(from, to) }

func (osOps) syncDir(dir string) error { return syncDir(dir) }

var ops fsOps = osOps{}

// WriteFileAtomic is libsnapshot's WriteStringToFileAtomic (§2.4): write
// <path>.tmp, fsync it, rename it over path, fsync the directory (EROFS and
// EINVAL from the directory sync are tolerated). Unlike AOSP a failed file
// fsync is an error: the rename must not publish data that may be lost.
func WriteFileAtomic(path string, data []byte) error {
	return writeFileAtomic(ops, path, data)
}

func writeFileAtomic(o fsOps, path string, data []byte) error {
	tmp := path + ".tmp"
	if err := o.writeFile(tmp, data); err != nil {
		return err
	}
	if err := o.syncFile(tmp); err != nil {
		return err
	}
	if err := o.rename(tmp, path); err != nil {
		return err
	}
	return o.syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, unix.EROFS) && !errors.Is(err, unix.EINVAL) {
		return err
	}
	return nil
}
