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
	reads  *int
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

// readBatch builds the READ SQEs with the real prepReadSQE and executes them
// as ReadAt on the model's file.
func (r *memRing) readBatch(fd int, rs []uringWrite) error {
	if len(rs) == 0 || len(rs) > uringDepth {
		return fmt.Errorf("batch of %d reads", len(rs))
	}
	sqe := make([]byte, sqeSize)
	for i := range rs {
		prepReadSQE(sqe, fd, uint32(i), rs)
		ud := binary.LittleEndian.Uint64(sqe[32:])
		off, ln := binary.LittleEndian.Uint64(sqe[8:]), binary.LittleEndian.Uint32(sqe[24:])
		if sqe[0] != ioringOpRead || sqe[1]&iosqeIOLink != 0 || ud != uint64(i) || int(ln) != len(rs[i].buf) || int64(off) != rs[i].off {
			return fmt.Errorf("READ sqe %d: opcode %d flags %#x user_data %d, %d bytes at %#x", i, sqe[0], sqe[1], ud, ln, off)
		}
		if r.reads != nil {
			*r.reads++
		}
		if err := faultfs.ReadFull(r.f, rs[i].buf, rs[i].off); err != nil {
			return err
		}
	}
	return nil
}
