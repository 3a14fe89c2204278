//go:build !linux

package merge

import "errors"

type uring struct{}

type uringWrite struct {
	buf []byte
	off int64
}

func newURing() (*uring, error) { return nil, errors.New("io_uring: not supported on this OS") }

func (r *uring) close() {}

func (r *uring) writeBatch(fd int, ws []uringWrite, fsync bool) error {
	return errors.New("io_uring: not supported on this OS")
}

func (r *uring) readBatch(fd int, rs []uringWrite) error {
	return errors.New("io_uring: not supported on this OS")
}

func setThreadNice(n int) error { return errors.New("thread priority: not supported on this OS") }
