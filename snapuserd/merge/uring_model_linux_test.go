package merge

import (
	"encoding/binary"
	"fmt"

	"github.com/vabc-go/vabc/internal/faultfs"
)

// memRing models the kernel io_uring over a faultfs file: it builds each
// batch's SQEs with the real prepSQE and executes them in order (WRITE →
// WriteAt, FSYNC → Sync), so that the io_uring path of the merge runs under
// the power-loss model: what the engine submits is what becomes durable.
type memRing struct {
	f      faultfs.File
	fsyncs *int
}

func init() {
	modelRing = func(f faultfs.File, fsyncs *int) ringWriter { return &memRing{f: f, fsyncs: fsyncs} }
}

func (r *memRing) close() {}

func (r *memRing) writeBatch(fd int, ws []uringWrite, fsync bool) error {
	n, err := batchLen(ws, fsync)
	if err != nil {
		return err
	}
	sqe := make([]byte, sqeSize)
	for i := uint32(0); i < n; i++ {
		prepSQE(sqe, fd, i, n, ws)
		ud := binary.LittleEndian.Uint64(sqe[32:])
		switch sqe[0] {
		case ioringOpWrite:
			if ud >= uint64(len(ws)) {
				return fmt.Errorf("WRITE sqe %d with user_data %d", i, ud)
			}
			w := ws[ud]
			off, ln := binary.LittleEndian.Uint64(sqe[8:]), binary.LittleEndian.Uint32(sqe[24:])
			if int(ln) != len(w.buf) || int64(off) != w.off {
				return fmt.Errorf("WRITE sqe %d: %d bytes at %#x, want %d at %#x", i, ln, off, len(w.buf), w.off)
			}
			if err := faultfs.WriteFull(r.f, w.buf, w.off); err != nil {
				return err
			}
		case ioringOpFsync:
			*r.fsyncs++
			if err := r.f.Sync(); err != nil {
				return err
			}
		default:
			return fmt.Errorf("sqe %d: opcode %d", i, sqe[0])
		}
	}
	return nil
}
