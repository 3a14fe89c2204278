package merge

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A minimal io_uring (Linux ≥ 5.6) for merge reads and writes, as AOSP's
// read-ahead and merge threads use it (snapuserd.md §6): the read-ahead
// reads a window's source runs as READ SQEs with IOSQE_ASYNC, up to the
// queue depth in flight (a ring of its own: the read-ahead runs beside the
// merge thread); the merge thread writes WRITE SQEs linked with
// IOSQE_IO_LINK so that they complete in order, queue depth 8, an FSYNC SQE
// with IOSQE_IO_DRAIN (and IORING_FSYNC_DATASYNC, as syncData) after a
// window's last write when the ring has room. Any failure makes the engine
// fall back to synchronous I/O for the rest of the merge (the window is
// rewritten from its buffer, or its reads repeated with pread: both are
// idempotent).

const (
	ioringOffSQRing = 0
	ioringOffCQRing = 0x8000000
	ioringOffSQEs   = 0x10000000

	ioringOpFsync = 3
	ioringOpRead  = 22
	ioringOpWrite = 23

	ioringFsyncDatasync = 1 // fsync_flags: fdatasync (see syncData)

	iosqeIODrain = 1 << 1
	iosqeIOLink  = 1 << 2
	iosqeAsync   = 1 << 4

	ioringEnterGetEvents = 1

	sqeSize = 64
	cqeSize = 16
)

// uringParams is struct io_uring_params (120 bytes).
type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  [10]uint32 // head tail ring_mask ring_entries flags dropped array resv1 user_addr(u64)
	cqOff                                                                  [10]uint32 // head tail ring_mask ring_entries overflow cqes flags resv1 user_addr(u64)
}

type uring struct {
	fd             int
	sqRing, cqRing []byte
	sqes           []byte
	sqTail, sqMask *uint32
	sqArray        unsafe.Pointer
	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           unsafe.Pointer
}

// uringWrite is one write of a batch.
type uringWrite struct {
	buf []byte
	off int64
}

func newURing() (*uring, error) {
	var p uringParams
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uringDepth, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &uring{fd: int(fd)}
	fail := func(what string, err error) (*uring, error) {
		r.close()
		return nil, fmt.Errorf("io_uring %s: %w", what, err)
	}
	var err error
	sqSize := int(p.sqOff[6]) + int(p.sqEntries)*4
	if r.sqRing, err = unix.Mmap(r.fd, ioringOffSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return fail("mmap sq ring", err)
	}
	cqSize := int(p.cqOff[5]) + int(p.cqEntries)*cqeSize
	if r.cqRing, err = unix.Mmap(r.fd, ioringOffCQRing, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return fail("mmap cq ring", err)
	}
	if r.sqes, err = unix.Mmap(r.fd, ioringOffSQEs, int(p.sqEntries)*sqeSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return fail("mmap sqes", err)
	}
	u32 := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
	r.sqTail = u32(r.sqRing, p.sqOff[1])
	r.sqMask = u32(r.sqRing, p.sqOff[2])
	r.sqArray = unsafe.Pointer(&r.sqRing[p.sqOff[6]])
	r.cqHead = u32(r.cqRing, p.cqOff[0])
	r.cqTail = u32(r.cqRing, p.cqOff[1])
	r.cqMask = *u32(r.cqRing, p.cqOff[2])
	r.cqes = unsafe.Pointer(&r.cqRing[p.cqOff[5]])
	if p.sqEntries < uringDepth || p.cqEntries < uringDepth {
		return fail("setup", fmt.Errorf("ring of %d/%d entries", p.sqEntries, p.cqEntries))
	}
	return r, nil
}

func (r *uring) close() {
	for _, m := range [][]byte{r.sqes, r.cqRing, r.sqRing} {
		if m != nil {
			unix.Munmap(m)
		}
	}
	unix.Close(r.fd)
}

func (r *uring) enter(submit, wait uint32) error {
	for {
		_, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(submit), uintptr(wait), ioringEnterGetEvents, 0, 0)
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return fmt.Errorf("io_uring_enter: %w", errno)
		}
		return nil
	}
}

// batchLen is the number of SQEs of a batch: one WRITE per run, plus the
// FSYNC.
func batchLen(ws []uringWrite, fsync bool) (uint32, error) {
	n := uint32(len(ws))
	if fsync {
		n++
	}
	if n == 0 || n > uringDepth {
		return 0, fmt.Errorf("io_uring batch of %d entries", n)
	}
	return n, nil
}

// prepSQE fills sqe as entry i of a batch of n: WRITE of ws[i] linked to
// the next entry, or (i == len(ws)) the drained FSYNC that ends the batch.
// user_data is i.
func prepSQE(sqe []byte, fd int, i, n uint32, ws []uringWrite) {
	clear(sqe)
	if i < uint32(len(ws)) {
		w := ws[i]
		sqe[0] = ioringOpWrite
		*(*uint64)(unsafe.Pointer(&sqe[16])) = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(w.buf))))
		*(*uint32)(unsafe.Pointer(&sqe[24])) = uint32(len(w.buf))
		*(*uint64)(unsafe.Pointer(&sqe[8])) = uint64(w.off)
		if i+1 < n {
			sqe[1] = iosqeIOLink
		}
	} else {
		sqe[0] = ioringOpFsync
		sqe[1] = iosqeIODrain
		*(*uint32)(unsafe.Pointer(&sqe[28])) = ioringFsyncDatasync
	}
	*(*int32)(unsafe.Pointer(&sqe[4])) = int32(fd)
	*(*uint64)(unsafe.Pointer(&sqe[32])) = uint64(i)
}

// writeBatch writes ws (≤ uringDepth, or uringDepth-1 with fsync) to fd as
// linked WRITE SQEs, optionally followed by a drained FSYNC, and waits for
// every completion.
func (r *uring) writeBatch(fd int, ws []uringWrite, fsync bool) error {
	n, err := batchLen(ws, fsync)
	if err != nil {
		return err
	}
	res, err := r.submit(n, func(sqe []byte, i uint32) { prepSQE(sqe, fd, i, n, ws) })
	runtime.KeepAlive(ws)
	if err != nil {
		return err
	}
	for i, v := range res {
		switch {
		case v < 0:
			what := "fsync"
			if i < len(ws) {
				what = fmt.Sprintf("write of %d bytes at %#x", len(ws[i].buf), ws[i].off)
			}
			return fmt.Errorf("io_uring %s: %w", what, syscall.Errno(-v))
		case i < len(ws) && int(v) != len(ws[i].buf):
			return fmt.Errorf("io_uring short write: %d of %d bytes at %#x", v, len(ws[i].buf), ws[i].off)
		}
	}
	return nil
}

// prepReadSQE fills sqe as a READ of rs[i] (IOSQE_ASYNC, not linked: the
// reads of a batch are independent). user_data is i.
func prepReadSQE(sqe []byte, fd int, i uint32, rs []uringWrite) {
	clear(sqe)
	w := rs[i]
	sqe[0] = ioringOpRead
	sqe[1] = iosqeAsync
	*(*int32)(unsafe.Pointer(&sqe[4])) = int32(fd)
	*(*uint64)(unsafe.Pointer(&sqe[8])) = uint64(w.off)
	*(*uint64)(unsafe.Pointer(&sqe[16])) = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(w.buf))))
	*(*uint32)(unsafe.Pointer(&sqe[24])) = uint32(len(w.buf))
	*(*uint64)(unsafe.Pointer(&sqe[32])) = uint64(i)
}

// readBatch fills every rs[i].buf from fd at rs[i].off (≤ uringDepth READ
// SQEs in flight at once) and waits for every completion; a short read is an
// error (the caller falls back to pread, which retries it).
func (r *uring) readBatch(fd int, rs []uringWrite) error {
	n := uint32(len(rs))
	if n == 0 || n > uringDepth {
		return fmt.Errorf("io_uring batch of %d reads", n)
	}
	res, err := r.submit(n, func(sqe []byte, i uint32) { prepReadSQE(sqe, fd, i, rs) })
	runtime.KeepAlive(rs)
	if err != nil {
		return err
	}
	for i, v := range res {
		switch {
		case v < 0:
			return fmt.Errorf("io_uring read of %d bytes at %#x: %w", len(rs[i].buf), rs[i].off, syscall.Errno(-v))
		case int(v) != len(rs[i].buf):
			return fmt.Errorf("io_uring short read: %d of %d bytes at %#x", v, len(rs[i].buf), rs[i].off)
		}
	}
	return nil
}

// submit queues n SQEs filled by prep, enters the ring and collects the n
// completions' results by user_data.
func (r *uring) submit(n uint32, prep func(sqe []byte, i uint32)) ([]int32, error) {
	tail := atomic.LoadUint32(r.sqTail)
	mask := atomic.LoadUint32(r.sqMask)
	for i := uint32(0); i < n; i++ {
		idx := (tail + i) & mask
		prep(r.sqes[idx*sqeSize:(idx+1)*sqeSize], i)
		*(*uint32)(unsafe.Add(r.sqArray, idx*4)) = idx
	}
	atomic.StoreUint32(r.sqTail, tail+n)
	err := r.enter(n, n)
	res := make([]int32, n)
	got := uint32(0)
	for err == nil && got < n {
		head := atomic.LoadUint32(r.cqHead)
		ctail := atomic.LoadUint32(r.cqTail)
		for ; head != ctail; head++ {
			cqe := unsafe.Add(r.cqes, uintptr(head&r.cqMask)*cqeSize)
			ud := *(*uint64)(cqe)
			if ud < uint64(n) {
				res[ud] = *(*int32)(unsafe.Add(cqe, 8))
				got++
			}
		}
		atomic.StoreUint32(r.cqHead, head)
		if got < n {
			err = r.enter(0, n-got)
		}
	}
	return res, err
}

// setThreadNice sets the nice value of the calling thread.
func setThreadNice(n int) error { return unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), n) }
