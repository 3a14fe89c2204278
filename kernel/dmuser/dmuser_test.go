package dmuser

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// ramStore is a trivial Handler over a byte slice; failAt makes reads that
// touch that sector fail (failAt < 0: never).
type ramStore struct {
	mu      sync.Mutex
	data    []byte
	failAt  int64
	block   chan struct{} // if non-nil, reads wait on it
	flushes int
	discard int
}

func newRAM(size int) *ramStore { return &ramStore{data: make([]byte, size), failAt: -1} }

func (r *ramStore) ReadSectors(p []byte, sector uint64) error {
	if r.block != nil {
		<-r.block
	}
	if sector > uint64(len(r.data))/SectorSize || int64(sector)*SectorSize+int64(len(p)) > int64(len(r.data)) {
		return fmt.Errorf("read beyond end")
	}
	off := int64(sector) * SectorSize
	if r.failAt >= 0 && r.failAt >= int64(sector) && r.failAt < int64(sector)+int64(len(p))/SectorSize {
		return fmt.Errorf("injected failure at sector %d", r.failAt)
	}
	r.mu.Lock()
	copy(p, r.data[off:])
	r.mu.Unlock()
	return nil
}

func (r *ramStore) WriteSectors(p []byte, sector uint64) error {
	if sector > uint64(len(r.data))/SectorSize || int64(sector)*SectorSize+int64(len(p)) > int64(len(r.data)) {
		return fmt.Errorf("write beyond end")
	}
	off := int64(sector) * SectorSize
	r.mu.Lock()
	copy(r.data[off:], p)
	r.mu.Unlock()
	return nil
}

func (r *ramStore) Flush() error {
	r.mu.Lock()
	r.flushes++
	r.mu.Unlock()
	return nil
}

func (r *ramStore) Discard(sector, length uint64) error {
	off := int64(sector) * SectorSize
	r.mu.Lock()
	defer r.mu.Unlock()
	if sector > uint64(len(r.data))/SectorSize || length > uint64(len(r.data)) || off+int64(length) > int64(len(r.data)) {
		return fmt.Errorf("discard beyond end")
	}
	clear(r.data[off : off+int64(length)])
	r.discard++
	return nil
}

// startServer wires a handler to an emulated target and returns the target
// and a function that waits for Server.Run's result.
func startServer(t testing.TB, h Handler, size int64, opts *EmulatorOptions) (*Target, func() error) {
	t.Helper()
	tgt, chans, err := NewTarget(size, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer("test", h, chans, nil)
	res := make(chan error, 1)
	go func() { res <- srv.Run(t.Context()) }()
	t.Cleanup(func() { tgt.Close() })
	return tgt, func() error {
		select {
		case err := <-res:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("server did not stop within 10s")
		}
	}
}

func TestHeaderEncoding(t *testing.T) {
	h := Header{Seq: 0x0102030405060708, Type: uint64(ReqWrite), Flags: FlagFUA | FlagSync, Sector: 77, Len: 4096}
	b, err := h.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != HeaderSize {
		t.Fatalf("encoded header is %d bytes, want %d", len(b), HeaderSize)
	}
	want := []byte{8, 7, 6, 5, 4, 3, 2, 1}
	if !bytes.Equal(b[:8], want) {
		t.Errorf("seq bytes % x, want little-endian % x", b[:8], want)
	}
	if got := binary.LittleEndian.Uint64(b[16:]); got != 0x208 {
		t.Errorf("flags field %#x, want 0x208", got)
	}
	var d Header
	if err := d.UnmarshalBinary(b); err != nil || d != h {
		t.Errorf("round trip: %v %v, want %v", d, err, h)
	}
	if err := d.UnmarshalBinary(b[:39]); err == nil {
		t.Error("39-byte header decoded without error")
	}
	if got := h.String(); got != "seq=72623859790382856 type=WRITE flags=SYNC|FUA sector=77 len=4096" {
		t.Errorf("String() = %q", got)
	}
	for _, tc := range []struct {
		v    fmt.Stringer
		want string
	}{
		{ReqRead, "READ"}, {ReqZoneResetAll, "ZONE_RESET_ALL"}, {Type(99), "Type(99)"},
		{StatusUnsupported, "UNSUPPORTED"}, {Status(7), "Status(7)"}, {Flags(0x80000) | FlagSwap, "SWAP|0x80000"},
	} {
		if got := tc.v.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}

// TestRandomIO drives a RAM store only through emulated kernel bytes:
// random reads and writes of arbitrary sector offsets and lengths up to
// 3 MiB, split at random sector boundaries, over several channels.
func TestRandomIO(t *testing.T) {
	for _, tc := range []struct {
		name     string
		channels int
		maxReq   int
		split    bool
		sock     bool // over socketpairs instead of in-process pipes
	}{
		{"1chan-1MiB", 1, 1 << 20, false, false},
		{"4chan-split", 4, 1 << 20, true, false},
		{"3chan-4MiB-requests", 3, 4 << 20, false, false},
		{"2chan-64KiB-split", 2, 64 << 10, true, false},
		{"1chan-1MiB-socketpair", 1, 1 << 20, false, true},
		{"3chan-split-socketpair", 3, 1 << 20, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const size = 8 << 20
			ram := newRAM(size)
			ref := make([]byte, size)
			rng := rand.New(rand.NewPCG(1, uint64(tc.channels)))
			opts := &EmulatorOptions{Channels: tc.channels, MaxRequest: tc.maxReq, Socketpair: tc.sock}
			if tc.split {
				opts.Split = rand.New(rand.NewPCG(2, 3))
			}
			tgt, wait := startServer(t, ram, size, opts)
			var wg sync.WaitGroup
			var mu sync.Mutex // writes vs. reads of overlapping ranges are ordered by mu
			for g := range 4 {
				seed := rng.Uint64()
				wg.Go(func() {
					r := rand.New(rand.NewPCG(seed, uint64(g)))
					for range 60 {
						sec := r.Int64N(size / SectorSize)
						n := min(r.Int64N(3<<20/SectorSize)+1, size/SectorSize-sec)
						off, l := sec*SectorSize, n*SectorSize
						mu.Lock()
						if r.IntN(3) == 0 {
							p := make([]byte, l)
							for i := range p {
								p[i] = byte(r.Uint32())
							}
							if _, err := tgt.WriteAt(p, off); err != nil {
								t.Errorf("write %d+%d: %v", off, l, err)
							}
							copy(ref[off:], p)
						} else {
							p := make([]byte, l)
							if _, err := tgt.ReadAt(p, off); err != nil {
								t.Errorf("read %d+%d: %v", off, l, err)
							} else if !bytes.Equal(p, ref[off:off+l]) {
								t.Errorf("read %d+%d: data differs", off, l)
							}
						}
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if err := tgt.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := tgt.Discard(4096, 8192); err != nil {
				t.Fatal(err)
			}
			clear(ref[4096 : 4096+8192])
			got := make([]byte, size)
			if _, err := tgt.ReadAt(got, 0); err != nil || !bytes.Equal(got, ref) {
				t.Fatalf("final full read: err=%v equal=%v", err, bytes.Equal(got, ref))
			}
			if ram.flushes != 1 || ram.discard == 0 {
				t.Errorf("flushes=%d discards=%d", ram.flushes, ram.discard)
			}
			if v := tgt.Violations(); len(v) != 0 {
				t.Errorf("violations: %v", v)
			}
			per := tgt.MessagesPerChannel()
			for i, n := range per {
				if tc.channels > 1 && n == 0 {
					t.Errorf("channel %d served no messages (%v)", i, per)
				}
			}
			tgt.Close()
			if err := wait(); err != nil {
				t.Fatalf("server: %v", err)
			}
		})
	}
}

func TestErrorResponses(t *testing.T) {
	ram := newRAM(1 << 20)
	ram.failAt = 100
	tgt, wait := startServer(t, ram, 1<<20, &EmulatorOptions{Channels: 2})
	var ioe *IOError
	p := make([]byte, 4096)
	if _, err := tgt.ReadAt(p, 96*512); !errors.As(err, &ioe) || ioe.Status != StatusError {
		t.Errorf("read over failing sector: %v, want ERROR status", err)
	}
	if _, err := tgt.ReadAt(p, 0); err != nil {
		t.Errorf("read after error: %v", err)
	}
	for _, typ := range []Type{ReqWriteSame, ReqZoneOpen, Type(1000)} {
		if err := tgt.Submit(typ, 0, 0, nil, 512); !errors.As(err, &ioe) || ioe.Status != StatusUnsupported {
			t.Errorf("%v: %v, want UNSUPPORTED", typ, err)
		}
	}
	// Unaligned length in a raw read request → ERROR, stream stays in sync.
	if err := tgt.Submit(ReqRead, 0, 0, make([]byte, 100), 0); !errors.As(err, &ioe) || ioe.Status != StatusError {
		t.Errorf("100-byte read: %v, want ERROR", err)
	}
	if err := tgt.Submit(ReqWrite, 0, 0, make([]byte, 100), 0); !errors.As(err, &ioe) || ioe.Status != StatusError {
		t.Errorf("100-byte write: %v, want ERROR", err)
	}
	if _, err := tgt.ReadAt(p, 4096); err != nil {
		t.Errorf("read after malformed requests: %v", err)
	}
	if _, err := tgt.ReadAt(p[:100], 0); err == nil {
		t.Error("unaligned ReadAt accepted")
	}
	if _, err := tgt.ReadAt(p, 1<<20); err == nil {
		t.Error("read beyond end accepted")
	}
	tgt.Close()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
}

// TestTeardownInFlight removes the target while the daemon holds requests:
// every I/O fails with ErrTargetGone and the worker loops exit cleanly.
func TestTeardownInFlight(t *testing.T) {
	ram := newRAM(4 << 20)
	ram.block = make(chan struct{})
	tgt, wait := startServer(t, ram, 4<<20, &EmulatorOptions{Channels: 3, MaxRequest: 64 << 10})
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			_, err := tgt.ReadAt(make([]byte, 512<<10), int64(i)*(512<<10))
			errs <- err
		}()
	}
	time.Sleep(50 * time.Millisecond) // let the channels hand out messages
	tgt.Close()
	close(ram.block) // the daemon finishes its reads and finds the target gone
	for range 8 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrTargetGone) {
				t.Errorf("in-flight read: %v, want ErrTargetGone", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("in-flight read did not complete after teardown")
		}
	}
	if err := wait(); err != nil {
		t.Fatalf("server after teardown: %v", err)
	}
	if _, err := tgt.ReadAt(make([]byte, 512), 0); !errors.Is(err, ErrTargetGone) {
		t.Errorf("read after teardown: %v", err)
	}
}

func TestServerCancel(t *testing.T) {
	tgt, chans, err := NewTarget(1<<20, &EmulatorOptions{Channels: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	ctx, cancel := context.WithCancel(t.Context())
	srv := NewServer("x", newRAM(1<<20), chans, nil)
	res := make(chan error, 1)
	go func() { res <- srv.Run(ctx) }()
	if _, err := tgt.ReadAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := tgt.ReadAt(make([]byte, 4096), 0); !errors.Is(err, ErrTargetGone) {
		t.Errorf("read with daemon gone: %v, want ErrTargetGone", err)
	}
}

// TestBadDaemon answers with a wrong sequence number through raw bytes; the
// emulation records a violation and fails the request.
func TestBadDaemon(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Header)
	}{
		{"wrong-seq", func(h *Header) { h.Seq += 5 }},
		{"wrong-len-echo", func(h *Header) { h.Len = 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tgt, chans, err := NewTarget(1<<20, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tgt.Close()
			go func() {
				hb := make([]byte, HeaderSize)
				if _, err := chans[0].Read(hb); err != nil {
					return
				}
				var h Header
				h.UnmarshalBinary(hb)
				tc.mod(&h)
				h.Type = uint64(StatusSuccess)
				out := make([]byte, HeaderSize+4096)
				h.put(out)
				chans[0].Write(out)
			}()
			_, err = tgt.ReadAt(make([]byte, 4096), 0)
			var ioe *IOError
			if !errors.As(err, &ioe) || ioe.Msg == "" {
				t.Fatalf("got %v, want protocol violation", err)
			}
			if len(tgt.Violations()) != 1 {
				t.Errorf("violations %v", tgt.Violations())
			}
			chans[0].Close()
		})
	}
}

// recConn records each Write call separately.
type recConn struct {
	in     *bytes.Reader
	writes [][]byte
}

func (c *recConn) Read(p []byte) (int, error) { return c.in.Read(p) }
func (c *recConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, append([]byte(nil), p...))
	return len(p), nil
}

func request(h Header, payload []byte) []byte {
	b, _ := h.AppendBinary(nil)
	return append(b, payload...)
}

// TestHandleMessageBytes checks exact response bytes, including that a read
// larger than 1 MiB is sent as header+1 MiB followed by header-less chunks.
func TestHandleMessageBytes(t *testing.T) {
	ram := newRAM(4 << 20)
	for i := range ram.data {
		ram.data[i] = byte(i / 512)
	}
	w := NewWorker(ram)
	t.Run("large-read", func(t *testing.T) {
		req := Header{Seq: 9, Type: uint64(ReqRead), Flags: FlagRahead, Sector: 3, Len: 2<<20 + 4096}
		c := &recConn{in: bytes.NewReader(request(req, nil))}
		if err := w.HandleMessage(c); err != nil {
			t.Fatal(err)
		}
		if len(c.writes) != 3 {
			t.Fatalf("%d writes, want 3", len(c.writes))
		}
		if len(c.writes[0]) != HeaderSize+MaxChunk || len(c.writes[1]) != MaxChunk || len(c.writes[2]) != 4096 {
			t.Errorf("write sizes %d %d %d", len(c.writes[0]), len(c.writes[1]), len(c.writes[2]))
		}
		want := req
		want.Type = uint64(StatusSuccess)
		wb, _ := want.AppendBinary(nil)
		if !bytes.Equal(c.writes[0][:HeaderSize], wb) {
			t.Errorf("response header % x, want % x", c.writes[0][:HeaderSize], wb)
		}
		data := bytes.Join([][]byte{c.writes[0][HeaderSize:], c.writes[1], c.writes[2]}, nil)
		if !bytes.Equal(data, ram.data[3*512:3*512+len(data)]) {
			t.Error("response data differs")
		}
	})
	t.Run("write-then-flush", func(t *testing.T) {
		payload := bytes.Repeat([]byte{0xab}, 1024)
		in := request(Header{Seq: 1, Type: uint64(ReqWrite), Sector: 8, Len: 1024}, payload)
		in = append(in, request(Header{Seq: 2, Type: uint64(ReqFlush), Flags: FlagPreflush}, nil)...)
		c := &recConn{in: bytes.NewReader(in)}
		for range 2 {
			if err := w.HandleMessage(c); err != nil {
				t.Fatal(err)
			}
		}
		if len(c.writes) != 2 || len(c.writes[0]) != HeaderSize || len(c.writes[1]) != HeaderSize {
			t.Fatalf("writes %d, want two header-only responses", len(c.writes))
		}
		if !bytes.Equal(ram.data[8*512:8*512+1024], payload) {
			t.Error("payload not stored")
		}
		if err := w.HandleMessage(c); !errors.Is(err, ErrTargetGone) {
			t.Errorf("at end of stream: %v, want ErrTargetGone", err)
		}
	})
	t.Run("error-after-header", func(t *testing.T) {
		ram.failAt = int64(MaxChunk/512 + 10)
		defer func() { ram.failAt = -1 }()
		c := &recConn{in: bytes.NewReader(request(Header{Seq: 4, Type: uint64(ReqRead), Len: 2 << 20}, nil))}
		if err := w.HandleMessage(c); err == nil || errors.Is(err, ErrTargetGone) {
			t.Errorf("got %v, want an unreportable-error failure", err)
		}
	})
	t.Run("huge-len", func(t *testing.T) {
		c := &recConn{in: bytes.NewReader(request(Header{Type: uint64(ReqRead), Len: 1 << 40}, nil))}
		var pe *ProtocolError
		if err := w.HandleMessage(c); !errors.As(err, &pe) {
			t.Errorf("got %v, want ProtocolError", err)
		}
	})
	t.Run("truncated-write-payload", func(t *testing.T) {
		c := &recConn{in: bytes.NewReader(request(Header{Type: uint64(ReqWrite), Len: 4096}, make([]byte, 100)))}
		if err := w.HandleMessage(c); !errors.Is(err, ErrTargetGone) {
			t.Errorf("got %v, want ErrTargetGone", err)
		}
	})
}

func TestOpenChannels(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenChannels(dir, "missing", 2); err == nil {
		t.Error("opening a missing node succeeded")
	}
	if _, err := OpenChannels(dir, "x", 0); err == nil {
		t.Error("zero channels accepted")
	}
}

func FuzzDecodeHeader(f *testing.F) {
	f.Add(request(Header{Seq: 1, Type: uint64(ReqRead), Sector: 8, Len: 4096}, nil))
	f.Add(request(Header{Seq: ^uint64(0), Type: 99, Flags: ^Flags(0), Sector: ^uint64(0), Len: ^uint64(0)}, nil))
	f.Add([]byte("short"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var h Header
		err := h.UnmarshalBinary(b)
		if len(b) < HeaderSize {
			if err == nil {
				t.Fatal("short input accepted")
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		_ = h.String()
		enc, _ := h.AppendBinary(nil)
		if !bytes.Equal(enc, b[:HeaderSize]) {
			t.Fatalf("round trip differs")
		}
		// Feed the bytes to a worker as a request stream: it must answer or
		// fail cleanly, never panic or allocate absurdly.
		w := NewWorker(newRAM(1 << 16))
		c := &recConn{in: bytes.NewReader(b)}
		for i := 0; i < 4 && w.HandleMessage(c) == nil; i++ {
		}
	})
}
