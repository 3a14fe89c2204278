package dmuser

import (
	"errors"
	"fmt"
	"io"
	"syscall"
)

// Handler serves block I/O for one dm-user target. Offsets are in 512-byte
// sectors; buffers are always a whole number of sectors long. Handlers are
// called concurrently from every worker loop of a Server.
type Handler interface {
	// ReadSectors fills p with the device contents starting at sector.
	ReadSectors(p []byte, sector uint64) error
	// WriteSectors stores p at sector. Read-only handlers return ErrReadOnly.
	WriteSectors(p []byte, sector uint64) error
	// Flush makes earlier writes durable.
	Flush() error
	// Discard drops the contents of length bytes at sector.
	Discard(sector, length uint64) error
}

var (
	// ErrTargetGone reports that the kernel side went away: read() on the
	// control node failed with ENOTBLK (the device-mapper table was torn
	// down), or, on the emulation's socketpair, the peer closed. Worker
	// loops end cleanly on it.
	ErrTargetGone = errors.New("dmuser: target gone")
	// ErrUnsupported from a Handler makes the response UNSUPPORTED.
	ErrUnsupported = errors.New("dmuser: operation not supported")
	// ErrReadOnly from a Handler makes the response ERROR.
	ErrReadOnly = errors.New("dmuser: device is read-only")
)

// MaxChunk is the largest single response write after the header. snapuserd
// streams read data in chunks of PAYLOAD_BUFFER_SZ = 1 MiB; only the first
// write carries the header.
const MaxChunk = 1 << 20

// maxRequestLen bounds the len field accepted from the kernel. The block
// layer never builds requests anywhere near this large; a bigger value means
// the stream is corrupt and the channel is closed instead of allocating.
const maxRequestLen = 1 << 30

// ProtocolError reports a malformed request on a channel. The stream cannot be
// resynchronised after one, so the worker loop stops.
type ProtocolError struct {
	Header Header
	Msg    string
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("dmuser: bad request (%v): %s", e.Header, e.Msg)
}

// Conn is one channel's byte stream: an open /dev/dm-user/<name> or one end
// of the emulation's socketpair.
type Conn interface {
	io.Reader
	io.Writer
}

// Worker is the per-channel protocol state: the reusable buffer (at most
// MaxChunk bytes plus the header). It is owned by one goroutine.
type Worker struct {
	h   Handler
	buf []byte
}

// NewWorker returns a Worker serving h.
func NewWorker(h Handler) *Worker { return &Worker{h: h} }

func (w *Worker) buffer(n int) []byte {
	if cap(w.buf) < n {
		w.buf = make([]byte, n)
	}
	return w.buf[:n]
}

// gone maps the errors that mean "the kernel side went away" to ErrTargetGone.
func gone(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ENOTBLK), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("%w (%v)", ErrTargetGone, err)
	}
	return err
}

// HandleMessage reads one request from c, serves it with the Handler and
// writes the response. It returns ErrTargetGone (wrapped) when the kernel
// side is gone, a *ProtocolError for a request it cannot parse, and any other
// I/O error from c. Handler errors are reported to the kernel as ERROR or
// UNSUPPORTED responses and do not end the loop, except a read error after
// the response header was already sent, which cannot be reported and is
// returned.
func (w *Worker) HandleMessage(c Conn) error {
	var hb [HeaderSize]byte
	if _, err := io.ReadFull(c, hb[:]); err != nil {
		return gone(err)
	}
	var req Header
	_ = req.UnmarshalBinary(hb[:])
	if req.Len > maxRequestLen {
		return &ProtocolError{Header: req, Msg: "len exceeds 1 GiB"}
	}
	typ := Type(req.Type)
	if req.Sector > (1<<63)/SectorSize {
		// sector×512 would overflow an int64 byte offset. The payload of a
		// write still has to be consumed to keep the stream in sync.
		if typ.hasPayload() {
			if _, err := io.CopyN(io.Discard, c, int64(req.Len)); err != nil {
				return gone(err)
			}
		}
		return w.respond(c, req, fmt.Errorf("sector %d out of range", req.Sector))
	}
	if typ.hasPayload() {
		return w.handleWrite(c, req)
	}
	switch typ {
	case ReqRead:
		return w.handleRead(c, req)
	case ReqFlush:
		return w.respond(c, req, w.h.Flush())
	case ReqDiscard, ReqWriteZeroes, ReqSecureErase:
		if req.Len%SectorSize != 0 {
			return w.respond(c, req, fmt.Errorf("len %d not a multiple of %d", req.Len, SectorSize))
		}
		return w.respond(c, req, w.h.Discard(req.Sector, req.Len))
	default:
		return w.respond(c, req, ErrUnsupported)
	}
}

// respond writes a header-only response whose status follows err.
func (w *Worker) respond(c Conn, req Header, err error) error {
	resp := req
	switch {
	case err == nil:
		resp.Type = uint64(StatusSuccess)
	case errors.Is(err, ErrUnsupported):
		resp.Type = uint64(StatusUnsupported)
	default:
		resp.Type = uint64(StatusError)
	}
	var hb [HeaderSize]byte
	resp.put(hb[:])
	_, werr := c.Write(hb[:])
	return gone(werr)
}

func (w *Worker) handleRead(c Conn, req Header) error {
	if req.Len%SectorSize != 0 {
		return w.respond(c, req, fmt.Errorf("len %d not a multiple of %d", req.Len, SectorSize))
	}
	// Produce the first chunk before sending anything so that an error in it
	// can still be reported.
	first := min(req.Len, MaxChunk)
	buf := w.buffer(HeaderSize + int(first))
	if err := w.h.ReadSectors(buf[HeaderSize:], req.Sector); err != nil {
		return w.respond(c, req, err)
	}
	resp := req
	resp.Type = uint64(StatusSuccess)
	resp.put(buf)
	if _, err := c.Write(buf); err != nil {
		return gone(err)
	}
	for done := first; done < req.Len; {
		n := min(req.Len-done, MaxChunk)
		chunk := w.buffer(int(n))
		if err := w.h.ReadSectors(chunk, req.Sector+done/SectorSize); err != nil {
			return fmt.Errorf("dmuser: read seq %d at sector %d after response header was sent: %w",
				req.Seq, req.Sector+done/SectorSize, err)
		}
		if _, err := c.Write(chunk); err != nil {
			return gone(err)
		}
		done += n
	}
	return nil
}

func (w *Worker) handleWrite(c Conn, req Header) error {
	// The payload has to be consumed in full whatever the outcome, or the
	// stream would desynchronise.
	var herr error
	if req.Len%SectorSize != 0 {
		herr = fmt.Errorf("len %d not a multiple of %d", req.Len, SectorSize)
	}
	for done := uint64(0); done < req.Len; {
		n := min(req.Len-done, MaxChunk)
		chunk := w.buffer(int(n))
		if _, err := io.ReadFull(c, chunk); err != nil {
			return gone(err)
		}
		if herr == nil {
			herr = w.h.WriteSectors(chunk, req.Sector+done/SectorSize)
		}
		done += n
	}
	return w.respond(c, req, herr)
}
