package dmuser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
)

// DefaultDir is where dm-user registers its misc devices.
const DefaultDir = "/dev/dm-user"

// Channel is one open control-node file descriptor. *os.File satisfies it.
type Channel interface {
	Conn
	io.Closer
}

// OpenChannels opens n channels on dir/name (dir defaults to DefaultDir).
// Each open() of the control node creates a fresh kernel-side channel.
func OpenChannels(dir, name string, n int) ([]Channel, error) {
	if dir == "" {
		dir = DefaultDir
	}
	if n < 1 {
		return nil, fmt.Errorf("dmuser: need at least one channel, got %d", n)
	}
	path := filepath.Join(dir, name)
	var chans []Channel
	for range n {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			for _, c := range chans {
				c.Close()
			}
			return nil, err // *os.PathError names the node
		}
		chans = append(chans, f)
	}
	return chans, nil
}

// Server is the transport: one worker loop per channel, all serving the same
// Handler. Create it with NewServer and call Run once.
type Server struct {
	name  string
	h     Handler
	chans []Channel
	log   *slog.Logger

	closeOnce sync.Once
}

// NewServer returns a server for the target name over chans. It takes
// ownership of the channels and closes them when Run returns.
func NewServer(name string, h Handler, chans []Channel, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{name: name, h: h, chans: chans, log: log.With("dm_user", name)}
}

// Run serves until every channel reports the target gone or ctx ends, and
// returns nil in both cases (cancellation and teardown are clean exits). It
// returns the first other error (protocol violation, unreportable read
// failure, I/O error) after the remaining loops have stopped.
//
// On cancellation the channels are closed. That interrupts pollable
// descriptors (sockets) at once; a blocking read() on a real dm-user node
// is only interrupted when the device-mapper table is removed, matching
// AOSP, where stopping the daemon waits for the dm-user devices to go.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(s.chans))
	for i, c := range s.chans {
		wg.Go(func() {
			errs[i] = s.loop(ctx, c)
			if errs[i] != nil {
				// A broken channel leaves the others running, as the kernel
				// would keep feeding them; only log here.
				s.log.Error("dm-user worker stopped", "channel", i, "err", errs[i])
			}
		})
	}
	go func() {
		<-ctx.Done()
		s.close()
	}()
	wg.Wait()
	cancel()
	s.close()
	return errors.Join(errs...)
}

func (s *Server) close() {
	s.closeOnce.Do(func() {
		for _, c := range s.chans {
			c.Close()
		}
	})
}

func (s *Server) loop(ctx context.Context, c Channel) error {
	w := NewWorker(s.h)
	for {
		err := w.HandleMessage(c)
		if err == nil {
			continue
		}
		if errors.Is(err, ErrTargetGone) || ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
			s.log.Debug("dm-user worker exiting", "reason", err)
			return nil
		}
		return err
	}
}
