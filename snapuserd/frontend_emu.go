package snapuserd

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/vabc-go/vabc/kernel/dmuser"
)

// EmulatedDmUser is a dm-user frontend whose kernel side is the in-process
// emulation (dmuser.Target): every read a test or benchmark issues on
// Target(misc) crosses the real dm-user byte protocol to the handler's read
// workers. It stands in for /dev/dm-user on hosts without the module.
type EmulatedDmUser struct {
	// Workers is the number of channels and read workers; 0 means 4
	// (AOSP's -worker_count default), so that several requests of one
	// device are served at once.
	Workers int
	Options dmuser.EmulatorOptions // Channels is overridden by Workers
	Logger  *slog.Logger

	mu      sync.Mutex // guards targets
	targets map[string]*dmuser.Target
}

// Name implements Frontend.
func (f *EmulatedDmUser) Name() string { return "dm-user (emulated)" }

// Target returns the emulated kernel side of misc, or nil.
func (f *EmulatedDmUser) Target(misc string) *dmuser.Target {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.targets[misc]
}

// Prepare creates the emulated target and its channels.
func (f *EmulatedDmUser) Prepare(misc string, dev Device) (Export, error) {
	opts := f.Options
	opts.Channels = f.Workers
	if opts.Channels <= 0 {
		opts.Channels = 4
	}
	t, chans, err := dmuser.NewTarget(dev.Size(), &opts)
	if err != nil {
		return nil, fmt.Errorf("snapuserd: emulated dm-user for %s: %w", misc, err)
	}
	f.mu.Lock()
	if f.targets == nil {
		f.targets = map[string]*dmuser.Target{}
	}
	f.targets[misc] = t
	f.mu.Unlock()
	return &emuExport{f: f, misc: misc, t: t, srv: dmuser.NewServer(misc, dev, chans, f.Logger), chans: chans}, nil
}

type emuExport struct {
	f     *EmulatedDmUser
	misc  string
	t     *dmuser.Target
	srv   *dmuser.Server
	chans []dmuser.Channel
}

// Serve runs the workers; when ctx ends the emulated table is torn down
// (as libsnapshot removes the dm device before delete).
func (e *emuExport) Serve(ctx context.Context) error {
	e.chans = nil
	stop := context.AfterFunc(ctx, func() { e.t.Close() })
	defer stop()
	err := e.srv.Run(context.Background())
	e.forget()
	return err
}

func (e *emuExport) Close() error {
	for _, c := range e.chans {
		c.Close()
	}
	e.t.Close()
	e.forget()
	return nil
}

func (e *emuExport) forget() {
	e.f.mu.Lock()
	if e.f.targets[e.misc] == e.t {
		delete(e.f.targets, e.misc)
	}
	e.f.mu.Unlock()
}
