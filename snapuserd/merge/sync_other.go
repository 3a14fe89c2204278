//go:build !linux

package merge

import "github.com/vabc-go/vabc/internal/faultfs"

// syncData makes the completed writes of f durable (fsync; see the Linux
// version for why fdatasync is enough there).
func syncData(f faultfs.File) error { return f.Sync() }

// startWriteback is a no-op without sync_file_range.
func startWriteback(f faultfs.File, off, n int64) {}
