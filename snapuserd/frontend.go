package snapuserd

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/vabc-go/vabc/kernel/dmuser"
)

// Device is one snapshot's block device as the frontends see it: the
// dm-user Handler operations on 512-byte sectors plus its size.
type Device interface {
	dmuser.Handler
	// Size is the device size in bytes (a multiple of 512).
	Size() int64
	Close() error
}

// Frontend exports Devices to the kernel. Prepare runs at init (so it can
// fail init, as opening /dev/dm-user/<misc> does in AOSP); the returned
// Export's Serve runs from start until the export ends.
type Frontend interface {
	Name() string
	Prepare(misc string, dev Device) (Export, error)
}

// Export is one prepared export.
type Export interface {
	// Serve exports the device until ctx ends or the kernel side goes
	// away; both are clean exits (nil).
	Serve(ctx context.Context) error
	// Close releases what Prepare acquired if Serve never ran.
	Close() error
}

// DmUser is the dm-user frontend: each handler opens Workers channels on
// Dir/<misc> (Dir defaults to /dev/dm-user) and serves them with one read
// worker per channel (-worker_count).
type DmUser struct {
	Dir     string
	Workers int
	Logger  *slog.Logger
}

// Name implements Frontend.
func (f *DmUser) Name() string { return "dm-user" }

// OpensAtStart is implemented by Devices whose dm-user device is created
// after init (Android 12's legacy mode: libsnapshot sizes it with init's
// num_sectors), so the dm-user frontend opens the control node at start.
type OpensAtStart interface {
	OpenAtStart() bool
}

// Prepare opens the control node's channels (at start for OpensAtStart
// devices).
func (f *DmUser) Prepare(misc string, dev Device) (Export, error) {
	if d, ok := dev.(OpensAtStart); ok && d.OpenAtStart() {
		return &lateDmUserExport{f: f, misc: misc, dev: dev}, nil
	}
	n := f.Workers
	if n <= 0 {
		n = 1
	}
	chans, err := dmuser.OpenChannels(f.Dir, misc, n)
	if err != nil {
		return nil, fmt.Errorf("snapuserd: dm-user control node for %s: %w", misc, err)
	}
	return &dmUserExport{srv: dmuser.NewServer(misc, dev, chans, f.Logger), chans: chans}, nil
}

type dmUserExport struct {
	srv   *dmuser.Server
	chans []dmuser.Channel
}

func (e *dmUserExport) Serve(ctx context.Context) error {
	e.chans = nil // the server owns and closes them now
	return e.srv.Run(ctx)
}

func (e *dmUserExport) Close() error {
	for _, c := range e.chans {
		c.Close()
	}
	return nil
}

// lateDmUserExport opens the control node when the handler starts (Attach,
// before start replies), like AOSP's Android 12 workers did.
type lateDmUserExport struct {
	f    *DmUser
	misc string
	dev  Device
	exp  Export
}

func (e *lateDmUserExport) Attach() error {
	if e.exp != nil {
		return nil
	}
	n := e.f.Workers
	if n <= 0 {
		n = 1
	}
	chans, err := dmuser.OpenChannels(e.f.Dir, e.misc, n)
	if err != nil {
		return fmt.Errorf("snapuserd: dm-user control node for %s: %w", e.misc, err)
	}
	e.exp = &dmUserExport{srv: dmuser.NewServer(e.misc, e.dev, chans, e.f.Logger), chans: chans}
	return nil
}

func (e *lateDmUserExport) Serve(ctx context.Context) error {
	if e.exp == nil {
		return fmt.Errorf("snapuserd: %s: served before its control node was opened", e.misc)
	}
	return e.exp.Serve(ctx)
}

func (e *lateDmUserExport) Close() error {
	if e.exp != nil {
		return e.exp.Close()
	}
	return nil
}
