//go:build !linux

package merge

import "errors"

func threadNice() (int, error) { return 0, errors.New("thread priority: not supported on this OS") }
