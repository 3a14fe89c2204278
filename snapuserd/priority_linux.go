package snapuserd

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ioprio_set(2) ABI: which = IOPRIO_WHO_PROCESS applies to one thread id;
// the priority is class<<13 | data, and IOPRIO_CLASS_IDLE has no data.
const (
	ioprioWhoProcess = 1
	ioprioClassShift = 13
	ioprioClassIdle  = 3
)

// lowerThreadPriority gives the calling thread (locked by the caller) the
// nice value nice (0 = unchanged) and, with idleIO, the idle I/O class.
// Without CAP_SYS_NICE raising is refused, lowering never is; EPERM is
// reported but not fatal.
func lowerThreadPriority(nice int, idleIO bool) error {
	tid := unix.Gettid()
	var errs []error
	if nice != 0 {
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, nice); err != nil {
			errs = append(errs, fmt.Errorf("setpriority(thread %d, %d): %w", tid, nice, err))
		}
	}
	if idleIO {
		_, _, e := unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(tid), ioprioClassIdle<<ioprioClassShift)
		if e != 0 {
			errs = append(errs, fmt.Errorf("ioprio_set(thread %d, IOPRIO_CLASS_IDLE): %w", tid, e))
		}
	}
	return errors.Join(errs...)
}
