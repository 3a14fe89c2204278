package merge

import "golang.org/x/sys/unix"

// threadNice is the nice value of the calling thread (getpriority returns
// 20 - nice on Linux).
func threadNice() (int, error) {
	v, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
	return 20 - v, err
}
