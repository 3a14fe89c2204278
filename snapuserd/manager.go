package snapuserd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/vabc-go/vabc/snapuserd/merge"
	"github.com/vabc-go/vabc/snapuserd/proto"
)

// Opener turns an init request into the handler's Device (normally
// OpenSnapshot: parse the COW, open the source and base devices).
type Opener func(req proto.InitRequest) (Device, error)

// MergeReporter is implemented by Devices that know their merge progress
// (from the COW header's num_merge_ops).
type MergeReporter interface {
	// MergeProgress returns the merged and total data ops and whether the
	// merge failed.
	MergeProgress() (merged, total uint64, failed bool)
}

// Config configures a Manager.
type Config struct {
	Frontend Frontend
	Open     Opener
	Logger   *slog.Logger
	// Merge tunes the merges started by initiate_merge (merging.go).
	Merge MergeConfig
	// VerifyOnStart starts each handler's update verification when it is
	// started (the second-stage boot daemon; AOSP skips -init handlers and
	// handlers resuming a merge), instead of on the first update-verify.
	VerifyOnStart bool
	// VerifyDevice, if set, names the device update-verify reads with
	// O_DIRECT for a misc name (the dm-verity device over the partition);
	// "" or nil: the handler's own read path.
	VerifyDevice func(misc string) string
	// VerifyTimeout bounds update-verify's wait (DefaultVerifyTimeout).
	VerifyTimeout time.Duration
	// StopCancels makes Stop end every handler itself. Set it for frontends
	// whose exports never end on their own (FUSE); with dm-user, Stop waits
	// for the kernel to remove the devices, as AOSP does.
	StopCancels bool
}

// Attacher is implemented by Exports that must make the device visible
// synchronously when start succeeds (FUSE adds DIR/<misc> before the reply).
type Attacher interface {
	Attach() error
}

// Manager owns the handlers and implements proto.Daemon.
type Manager struct {
	cfg Config
	log *slog.Logger
	wg  sync.WaitGroup // one per started handler goroutine

	mu          sync.Mutex // guards the fields that follow
	handlers    map[string]*handler
	terminating bool
	paused      bool

	limiter        *merge.Limiter // bounds concurrent merges (num_merge_threads)
	mergeThreads   int
	mergesComplete int // guarded by mu: merges finished by this daemon (num_partitions_merge_complete_)
}

// handler is one snapshot. Fields are guarded by Manager.mu except dev and
// exp, which are set at init and read-only afterwards.
type handler struct {
	misc     string
	req      proto.InitRequest
	dev      Device
	exp      Export
	started  bool
	cancel   context.CancelFunc
	done     chan struct{} // closed when the serving goroutine returns
	serveErr error
	job      *mergeJob // set by initiate_merge (merging.go)

	verify *verifyJob // update-verify's read of the device (verify.go)

	// pinned are the files a non-root client's init was opened through
	// (openAsPeer); req names them by /proc/self/fd. Closed by release.
	pinned []*os.File
}

var _ proto.Daemon = (*Manager)(nil)

// NewManager returns an empty manager.
func NewManager(cfg Config) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n := cfg.Merge.Threads
	if n < 1 {
		n = merge.DefaultMergeThreads
	}
	return &Manager{cfg: cfg, log: cfg.Logger, handlers: map[string]*handler{},
		limiter: merge.NewLimiter(n), mergeThreads: n}
}

// ErrLegacy is returned for the 4-field init of Android 12's dm-snapshot
// compatibility mode (Mode A), which this daemon does not implement — like
// current AOSP snapuserd ("No support for legacy snapshots").
var ErrLegacy = errors.New("snapuserd: legacy dm-snapshot mode (4-field init) is not implemented; userspace snapshots only")

// InitHandler implements proto.Daemon.
func (m *Manager) InitHandler(req proto.InitRequest) (uint64, error) {
	if req.Legacy {
		return 0, ErrLegacy
	}
	// The name becomes a path component (/dev/dm-user/<misc>, the FUSE
	// mount): ../victim must not name another file.
	if err := proto.CheckMiscName(req.Misc); err != nil {
		return 0, err
	}
	var pinned []*os.File
	if req.Peer != nil {
		orig := req
		var err error
		if pinned, req, err = openAsPeer(req.Peer, req); err != nil {
			return 0, err
		}
		m.log.Info("init paths opened with the client's access rights", "misc", req.Misc, "peer", req.Peer.String(),
			"cow", orig.Cow, "backing", orig.Backing, "base", orig.BasePath)
	}
	m.mu.Lock()
	if _, ok := m.handlers[req.Misc]; ok {
		m.mu.Unlock()
		closeAll(pinned)
		return 0, fmt.Errorf("snapuserd: handler %s already exists", req.Misc)
	}
	if m.terminating {
		m.mu.Unlock()
		closeAll(pinned)
		return 0, errors.New("snapuserd: daemon is terminating")
	}
	// Reserve the name so a concurrent init of the same name fails.
	h := &handler{misc: req.Misc, req: req, done: make(chan struct{}), pinned: pinned}
	m.handlers[req.Misc] = h
	m.mu.Unlock()

	fail := func(err error) (uint64, error) {
		m.mu.Lock()
		delete(m.handlers, req.Misc)
		m.mu.Unlock()
		closeAll(pinned)
		return 0, err
	}
	dev, err := m.cfg.Open(req)
	if err != nil {
		return fail(err)
	}
	exp, err := m.cfg.Frontend.Prepare(req.Misc, dev)
	if err != nil {
		dev.Close()
		return fail(err)
	}
	h.dev, h.exp = dev, exp
	m.log.Info("handler initialized", "misc", req.Misc, "cow", req.Cow, "backing", req.Backing,
		"base", req.BasePath, "sectors", dev.Size()/512, "frontend", m.cfg.Frontend.Name())
	return uint64(dev.Size() / 512), nil
}

// StartHandler implements proto.Daemon.
func (m *Manager) StartHandler(misc string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.handlers[misc]
	switch {
	case !ok || h.dev == nil:
		return fmt.Errorf("snapuserd: no handler %s", misc)
	case h.started:
		return fmt.Errorf("snapuserd: handler %s already attached", misc)
	}
	if a, ok := h.exp.(Attacher); ok {
		if err := a.Attach(); err != nil {
			return fmt.Errorf("snapuserd: attach %s: %w", misc, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.started, h.cancel = true, cancel
	if m.cfg.VerifyOnStart && !skipVerifyOnStart(h) {
		m.startVerifyLocked(h)
	}
	m.wg.Go(func() {
		defer close(h.done)
		err := h.exp.Serve(ctx)
		m.mu.Lock()
		h.serveErr = err
		m.mu.Unlock()
		if err != nil {
			m.log.Error("handler stopped", "misc", misc, "err", err)
		} else {
			m.log.Info("handler stopped", "misc", misc)
		}
	})
	return nil
}

// DeleteHandler implements proto.Daemon: stop serving, wait for the
// serving goroutine, release the device. Unknown names succeed.
func (m *Manager) DeleteHandler(misc string) error {
	m.mu.Lock()
	h, ok := m.handlers[misc]
	if !ok || h.dev == nil {
		m.mu.Unlock()
		return nil
	}
	delete(m.handlers, misc)
	m.mu.Unlock()
	m.release(h)
	m.log.Info("handler deleted", "misc", misc)
	return nil
}

func (m *Manager) release(h *handler) {
	// Stop the merge first: it may be waiting for the serving path's
	// readers; its on-disk state is consistent wherever it stops.
	m.mu.Lock()
	j := m.stopMergeLocked(h)
	vj := h.verify
	m.mu.Unlock()
	waitMerge(j)
	stopVerify(vj)
	if h.started {
		h.cancel()
		<-h.done
	} else {
		h.exp.Close()
	}
	h.dev.Close()
	closeAll(h.pinned)
}

// InitiateMerge implements proto.Daemon: start the partition's merge
// (merging.go); it waits for a merge slot if num_merge_threads partitions
// are merging already.
func (m *Manager) InitiateMerge(misc string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.handlers[misc]
	if !ok || !h.started {
		return fmt.Errorf("snapuserd: handler %s not attached", misc)
	}
	if m.terminating {
		return errors.New("snapuserd: daemon is terminating")
	}
	return m.initiateMergeLocked(h)
}

func progress(h *handler) (merged, total uint64, failed bool) {
	if r, ok := h.dev.(MergeReporter); ok {
		return r.MergeProgress()
	}
	return 0, 0, false
}

// MergePercent implements proto.Daemon: (completed×100 + Σ in-progress %)
// / (completed + in-progress) over the partitions whose merge was initiated.
func (m *Manager) MergePercent() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mergePercentLocked()
}

// MergeStatus implements proto.Daemon.
func (m *Manager) MergeStatus(misc string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.handlers[misc]
	if !ok || h.dev == nil {
		return proto.StatusMergeFailed
	}
	return mergeStatusLocked(h)
}

// PauseMerge implements proto.Daemon: every merge (and those initiated
// later) parks at its next safe point.
func (m *Manager) PauseMerge() {
	m.mu.Lock()
	m.paused = true
	m.pauseMergesLocked(true)
	m.mu.Unlock()
}

// ResumeMerge implements proto.Daemon.
func (m *Manager) ResumeMerge() {
	m.mu.Lock()
	m.paused = false
	m.pauseMergesLocked(false)
	m.mu.Unlock()
}

// Detach implements proto.Daemon: stop merges, mark terminating; handlers
// keep serving until their devices go away (Wait).
func (m *Manager) Detach() {
	m.mu.Lock()
	m.terminating = true
	var jobs []*mergeJob
	for _, h := range m.handlers {
		jobs = append(jobs, m.stopMergeLocked(h))
	}
	m.mu.Unlock()
	for _, j := range jobs {
		if j != nil {
			<-j.done // files are closed when the handler is released
		}
	}
}

// Stop implements proto.Daemon: mark terminating and wait for every
// handler's serving goroutine, as AOSP joins its handler threads (a dm-user
// handler ends when its device is removed).
func (m *Manager) Stop() {
	if m.cfg.StopCancels {
		m.Shutdown()
		return
	}
	m.mu.Lock()
	m.terminating = true
	m.mu.Unlock()
	m.Wait()
}

// Wait blocks until every started handler stopped serving.
func (m *Manager) Wait() { m.wg.Wait() }

// Shutdown cancels every handler, waits for them and releases all devices.
func (m *Manager) Shutdown() {
	m.mu.Lock()
	m.terminating = true
	hs := m.handlers
	m.handlers = map[string]*handler{}
	m.mu.Unlock()
	for _, h := range hs {
		if h.dev != nil {
			m.release(h)
		}
	}
	m.wg.Wait()
}

// Handlers lists the misc names (sorted order not guaranteed).
func (m *Manager) Handlers() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for k, h := range m.handlers {
		if h.dev != nil {
			out = append(out, k)
		}
	}
	return out
}
