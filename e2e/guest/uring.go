package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/kernel/dm"
)

// A minimal io_uring (one operation at a time) for the dm-user framing checks: the module
// must keep one message per io_uring READ/READV and one answer per WRITE/WRITEV, as for
// read()/readv().

const (
	uringOpReadv  = 1
	uringOpWritev = 2
	uringOpRead   = 22
	uringOpWrite  = 23
)

type uring struct {
	fd         int
	sqRing     []byte
	cqRing     []byte
	sqes       []byte
	sqTail     *uint32
	sqMask     uint32
	cqHead     *uint32
	cqTail     *uint32
	cqMask     uint32
	cqesOff    uint32
	sqEntries  uint32
	cqEntries  uint32
	sqArrayOff uint32
}

func newURing() (*uring, error) {
	var p [120]byte // struct io_uring_params
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&p[0])), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	le := binary.LittleEndian
	r := &uring{fd: int(fd), sqEntries: le.Uint32(p[0:]), cqEntries: le.Uint32(p[4:])}
	sqOff, cqOff := p[40:80], p[80:120]
	sqSize := int(le.Uint32(sqOff[24:])) + int(r.sqEntries)*4
	cqSize := int(le.Uint32(cqOff[20:])) + int(r.cqEntries)*16
	var err error
	fail := func(what string, err error) (*uring, error) {
		r.close()
		return nil, fmt.Errorf("io_uring mmap %s: %w", what, err)
	}
	if r.sqRing, err = unix.Mmap(r.fd, 0, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return fail("sq ring", err)
	}
	if r.cqRing, err = unix.Mmap(r.fd, 0x8000000, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return fail("cq ring", err)
	}
	if r.sqes, err = unix.Mmap(r.fd, 0x10000000, int(r.sqEntries)*64, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return fail("sqes", err)
	}
	r.sqTail = (*uint32)(unsafe.Pointer(&r.sqRing[le.Uint32(sqOff[4:])]))
	r.sqMask = *(*uint32)(unsafe.Pointer(&r.sqRing[le.Uint32(sqOff[8:])]))
	r.sqArrayOff = le.Uint32(sqOff[24:])
	r.cqHead = (*uint32)(unsafe.Pointer(&r.cqRing[le.Uint32(cqOff[0:])]))
	r.cqTail = (*uint32)(unsafe.Pointer(&r.cqRing[le.Uint32(cqOff[4:])]))
	r.cqMask = *(*uint32)(unsafe.Pointer(&r.cqRing[le.Uint32(cqOff[8:])]))
	r.cqesOff = le.Uint32(cqOff[20:])
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

// do runs one operation on fd: a vectored one (READV/WRITEV) with bufs as its iovecs, or
// a plain one (READ/WRITE) with bufs[0]. It returns the completion's result.
func (r *uring) do(op uint8, fd int, bufs [][]byte) (int, error) {
	iovs := make([]unix.Iovec, len(bufs))
	for i, b := range bufs {
		iovs[i].Base = &b[0]
		iovs[i].SetLen(len(b))
	}
	tail := atomic.LoadUint32(r.sqTail)
	idx := tail & r.sqMask
	sqe := r.sqes[idx*64 : idx*64+64]
	clear(sqe)
	le := binary.LittleEndian
	sqe[0] = op
	le.PutUint32(sqe[4:], uint32(fd))
	le.PutUint64(sqe[8:], ^uint64(0)) // no offset: a stream
	if op == uringOpReadv || op == uringOpWritev {
		le.PutUint64(sqe[16:], uint64(uintptr(unsafe.Pointer(&iovs[0]))))
		le.PutUint32(sqe[24:], uint32(len(iovs)))
	} else {
		le.PutUint64(sqe[16:], uint64(uintptr(unsafe.Pointer(&bufs[0][0]))))
		le.PutUint32(sqe[24:], uint32(len(bufs[0])))
	}
	le.PutUint64(sqe[32:], uint64(tail)+1) // user_data
	*(*uint32)(unsafe.Pointer(&r.sqRing[r.sqArrayOff+idx*4])) = idx
	atomic.StoreUint32(r.sqTail, tail+1)
	for {
		_, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 1, 1, 1 /* GETEVENTS */, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, fmt.Errorf("io_uring_enter: %w", errno)
		}
		break
	}
	runtime.KeepAlive(iovs)
	runtime.KeepAlive(bufs)
	head := atomic.LoadUint32(r.cqHead)
	if head == atomic.LoadUint32(r.cqTail) {
		return 0, fmt.Errorf("io_uring: no completion")
	}
	cqe := r.cqRing[r.cqesOff+(head&r.cqMask)*16:]
	res := int32(le.Uint32(cqe[8:]))
	atomic.StoreUint32(r.cqHead, head+1)
	if res < 0 {
		return 0, unix.Errno(-res)
	}
	return int(res), nil
}

// brURingFraming: io_uring READV/READ of the control node return one message, and an
// answer sent with io_uring WRITEV/WRITE lands like one sent with write().
func brURingFraming(ctx context.Context, e *env, c *dm.Control) error {
	const name = "t-bad7"
	defer cleanup(c, name)
	path, err := c.CreateDevice(name, []dm.Target{dm.User(0, 2048, name)}, nil)
	if err != nil {
		return err
	}
	ctl := "/dev/dm-user/" + name
	fd, err := unix.Open(ctl, unix.O_RDWR|unix.O_CLOEXEC, 0) // blocking: io_uring punts to a worker
	if err != nil {
		return &os.PathError{Op: "open", Path: ctl, Err: err}
	}
	defer unix.Close(fd)
	r, err := newURing()
	if err != nil {
		return err
	}
	defer r.close()
	res := map[uint64]<-chan ioResult{60 * 8: asyncRead(path, 60*4096, 4096), 61 * 8: asyncRead(path, 61*4096, 4096)}
	if err := waitOutstanding(ctx, c, name, 2); err != nil {
		return err
	}
	for _, ops := range [][2]uint8{{uringOpReadv, uringOpWritev}, {uringOpRead, uringOpWrite}} {
		hb := make([]byte, msgHeaderSize)
		var n int
		if ops[0] == uringOpReadv {
			n, err = r.do(ops[0], fd, [][]byte{hb, make([]byte, 4096)})
		} else {
			big := make([]byte, msgHeaderSize+4096)
			n, err = r.do(ops[0], fd, [][]byte{big})
			copy(hb, big)
		}
		if err != nil {
			return fmt.Errorf("io_uring op %d: %w", ops[0], err)
		}
		if n != msgHeaderSize {
			return fmt.Errorf("io_uring op %d with two READ requests queued returned %d bytes, want 40 (one message)", ops[0], n)
		}
		var h msgHeader
		h.decode(hb)
		if h.Type != reqRead || res[h.Sector] == nil {
			return fmt.Errorf("io_uring op %d: header %+v", ops[0], h)
		}
		d := blockData(int(h.Sector / 8))
		var bufs [][]byte
		if ops[1] == uringOpWritev {
			bufs = [][]byte{successHeader(h), d[:100], d[100:]}
		} else {
			bufs = [][]byte{append(successHeader(h), d...)}
		}
		if n, err := r.do(ops[1], fd, bufs); err != nil || n != msgHeaderSize+4096 {
			return fmt.Errorf("io_uring op %d answer: %d %v", ops[1], n, err)
		}
	}
	for sector, ch := range res {
		got, err := awaitIO(ch, "read answered over io_uring")
		if err != nil {
			return err
		}
		if got.err != nil || !bytes.Equal(got.data, blockData(int(sector/8))) {
			return fmt.Errorf("block %d answered over io_uring: %v", sector/8, got.err)
		}
	}
	return nil
}
