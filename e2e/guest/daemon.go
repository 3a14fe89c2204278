package main

// The passthrough test daemon: serves a file (on the guest's tmpfs) as the block device
// behind a dm-user target. By default (-impl dmuser) it uses the product transport,
// kernel/dmuser.Server, so the VM tests exercise that package against the real module.
// -impl raw is a minimal protocol loop of its own (snapuserd.md §2), written before
// kernel/dmuser existed; it stays as an independent second implementation of the wire
// format.

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/kernel/dmuser"
)

// dm-user message header (snapuserd.md §2): five little-endian u64.
const (
	msgHeaderSize = 40

	reqRead  = 0
	reqWrite = 1
	reqFlush = 2

	respSuccess     = 0
	respError       = 1
	respUnsupported = 2
)

type msgHeader struct {
	Seq, Type, Flags, Sector, Len uint64
}

func (h *msgHeader) decode(b []byte) {
	le := binary.LittleEndian
	h.Seq, h.Type, h.Flags, h.Sector, h.Len = le.Uint64(b), le.Uint64(b[8:]), le.Uint64(b[16:]), le.Uint64(b[24:]), le.Uint64(b[32:])
}

func (h *msgHeader) encode(b []byte) {
	le := binary.LittleEndian
	le.PutUint64(b, h.Seq)
	le.PutUint64(b[8:], h.Type)
	le.PutUint64(b[16:], h.Flags)
	le.PutUint64(b[24:], h.Sector)
	le.PutUint64(b[32:], h.Len)
}

// Exit codes of the daemon process, read by the scenarios.
const (
	exitENOTBLK = 0 // every channel saw ENOTBLK: the target went away (normal shutdown)
	exitError   = 1
	exitUsage   = 2
)

type daemonStats struct {
	reads, writes, flushes, other atomic.Int64
}

func daemonMain(args []string) int {
	fs := flag.NewFlagSet("passthrough-daemon", flag.ContinueOnError)
	ctl := fs.String("ctl", "", "control node, /dev/dm-user/<name>")
	store := fs.String("store", "", "backing file")
	channels := fs.Int("channels", 4, "control-node channels (one goroutine each)")
	delay := fs.Duration("delay", 0, "sleep before answering each request (to keep I/O in flight)")
	impl := fs.String("impl", "dmuser", "protocol implementation: dmuser (kernel/dmuser.Server) or raw")
	if err := fs.Parse(args); err != nil || *ctl == "" || *store == "" || (*impl != "dmuser" && *impl != "raw") {
		fmt.Fprintln(os.Stderr, "usage: passthrough-daemon -ctl /dev/dm-user/NAME -store FILE [-channels N] [-delay D] [-impl dmuser|raw]")
		return exitUsage
	}
	f, err := os.OpenFile(*store, os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "daemon:", err)
		return exitError
	}
	defer f.Close()

	var st daemonStats
	if *impl == "dmuser" {
		return serveDmuser(*ctl, f, *channels, *delay, &st)
	}
	var wg sync.WaitGroup
	errs := make(chan error, *channels)
	for i := 0; i < *channels; i++ {
		c, err := os.OpenFile(*ctl, os.O_RDWR, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, "daemon:", err)
			return exitError
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			errs <- serveChannel(c, f, *delay, &st)
		}()
	}
	fmt.Printf("DAEMON: ready %d channels on %s\n", *channels, *ctl)
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGUSR1)
		for range sig {
			fmt.Printf("DAEMON: stats reads=%d writes=%d flushes=%d other=%d\n",
				st.reads.Load(), st.writes.Load(), st.flushes.Load(), st.other.Load())
		}
	}()
	wg.Wait()
	close(errs)
	code := exitENOTBLK
	for err := range errs {
		if !errors.Is(err, unix.ENOTBLK) {
			fmt.Fprintln(os.Stderr, "daemon: channel:", err)
			code = exitError
		}
	}
	fmt.Printf("DAEMON: exit reads=%d writes=%d flushes=%d other=%d enotblk=%v\n",
		st.reads.Load(), st.writes.Load(), st.flushes.Load(), st.other.Load(), code == exitENOTBLK)
	return code
}

// serveChannel runs read -> handle -> write until the control node fails (ENOTBLK after
// the target is destroyed).
func serveChannel(c *os.File, store *os.File, delay time.Duration, st *daemonStats) error {
	buf := make([]byte, msgHeaderSize+(1<<20))
	var h msgHeader
	for {
		// One read() returns at most one message; a header is always read whole.
		n, err := c.Read(buf[:msgHeaderSize])
		if err != nil {
			return err
		}
		if n != msgHeaderSize {
			return fmt.Errorf("short header read: %d bytes", n)
		}
		h.decode(buf)
		if h.Len > 1<<20 {
			return fmt.Errorf("request seq %d: len %d larger than the 1 MiB buffer", h.Seq, h.Len)
		}
		if delay > 0 {
			time.Sleep(delay)
		}
		off := int64(h.Sector) * 512
		payload := buf[msgHeaderSize : msgHeaderSize+h.Len]
		resp := h
		resp.Type = respSuccess
		out := buf[:msgHeaderSize]
		switch h.Type {
		case reqRead:
			st.reads.Add(1)
			if _, err := store.ReadAt(payload, off); err != nil && !errors.Is(err, io.EOF) {
				resp.Type = respError
			} else {
				out = buf[:msgHeaderSize+h.Len]
			}
		case reqWrite:
			st.writes.Add(1)
			if _, err := io.ReadFull(c, payload); err != nil {
				return fmt.Errorf("request seq %d: write payload: %w", h.Seq, err)
			}
			if _, err := store.WriteAt(payload, off); err != nil {
				resp.Type = respError
			}
		case reqFlush:
			st.flushes.Add(1)
			if err := store.Sync(); err != nil {
				resp.Type = respError
			}
		default:
			st.other.Add(1)
			resp.Type = respUnsupported
		}
		resp.encode(buf)
		if _, err := c.Write(out); err != nil {
			return fmt.Errorf("request seq %d: answer: %w", h.Seq, err)
		}
	}
}

// fileHandler is a kernel/dmuser.Handler over a file.
type fileHandler struct {
	f     *os.File
	delay time.Duration
	st    *daemonStats
}

func (h *fileHandler) ReadSectors(p []byte, sector uint64) error {
	h.st.reads.Add(1)
	time.Sleep(h.delay)
	_, err := h.f.ReadAt(p, int64(sector)*512)
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("read past the end of the store at sector %d", sector)
	}
	return err
}

func (h *fileHandler) WriteSectors(p []byte, sector uint64) error {
	h.st.writes.Add(1)
	time.Sleep(h.delay)
	_, err := h.f.WriteAt(p, int64(sector)*512)
	return err
}

func (h *fileHandler) Flush() error {
	h.st.flushes.Add(1)
	return h.f.Sync()
}

func (h *fileHandler) Discard(sector, length uint64) error {
	h.st.other.Add(1)
	return dmuser.ErrUnsupported
}

func serveDmuser(ctl string, f *os.File, channels int, delay time.Duration, st *daemonStats) int {
	chans, err := dmuser.OpenChannels(filepath.Dir(ctl), filepath.Base(ctl), channels)
	if err != nil {
		fmt.Fprintln(os.Stderr, "daemon:", err)
		return exitError
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv := dmuser.NewServer(filepath.Base(ctl), &fileHandler{f: f, delay: delay, st: st}, chans, log)
	fmt.Printf("DAEMON: ready %d channels on %s (kernel/dmuser)\n", channels, ctl)
	// Run returns nil once every channel has seen ENOTBLK (target gone).
	code := exitENOTBLK
	if err := srv.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "daemon:", err)
		code = exitError
	}
	fmt.Printf("DAEMON: exit reads=%d writes=%d flushes=%d other=%d enotblk=%v\n",
		st.reads.Load(), st.writes.Load(), st.flushes.Load(), st.other.Load(), code == exitENOTBLK)
	return code
}
