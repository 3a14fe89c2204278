package snapuserd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"

	"github.com/vabc-go/vabc/internal/faultfs"
	"github.com/vabc-go/vabc/snapuserd/merge"
	"github.com/vabc-go/vabc/snapuserd/proto"
)

// This file wires the merge engine (package merge, spec snapuserd.md §5)
// into the daemon: initiate_merge creates the partition's merge.Engine,
// switches the handler's read path over to it and runs the merge on a
// background-priority thread, at most MergeConfig.Threads partitions at once
// (ro.virtual_ab.num_merge_threads). getstatus, merge_percent,
// pause_merge and resume_merge report on and steer those engines.

// MergeConfig tunes the daemon's merges. The zero value means AOSP's
// defaults except for the thread priority (see cmd/snapuserd's flags).
type MergeConfig struct {
	// Threads bounds how many partitions merge at once
	// (-num_merge_threads, ro.virtual_ab.num_merge_threads); < 1 means 2.
	// The others wait, status snapshot-merge, in initiate_merge order.
	Threads int
	// Nice, if non-zero, is the nice value of each merge thread
	// (ro.virtual_ab.merge_thread_priority, AOSP: 10).
	Nice int
	// IdleIO puts each merge thread in the idle I/O scheduling class
	// (ioprio_set IOPRIO_CLASS_IDLE), so that reads of the snapshots win.
	IdleIO bool
	// IOUring sends merge writes through io_uring when the kernel allows it
	// (-io_uring), with automatic fallback to synchronous I/O.
	IOUring bool
	// MergeSize caps ops per I/O (-cow_op_merge_size; 0 = uncapped).
	MergeSize int
}

// Merger is implemented by Devices whose snapshot can be merged into the
// base device. PrepareMerge builds the engine from the on-disk merge state
// and, from its return on, serves every read through the engine, so that
// reads stay correct while the engine writes the base device. It is called
// at most once per Device; release closes what it opened.
type Merger interface {
	PrepareMerge(opts *merge.Options) (eng *merge.Engine, release func() error, err error)
}

// mergeJob is one partition's merge, created by initiate_merge. Fields are
// guarded by Manager.mu except eng, release and done (set before the job is
// published, read-only afterwards).
type mergeJob struct {
	eng     *merge.Engine // nil if the merge could not be prepared
	release func() error
	cancel  context.CancelFunc
	done    chan struct{} // closed when the merge goroutine returned
	err     error         // why the merge failed (preparation or Run)
	stopped bool          // cancelled by delete/detach/shutdown
	counted bool          // completed and counted in Manager.mergesComplete
}

// snapshotMerge is the Snapshot's side of the merge: the files the engine
// merges and the switch of the read path.
type snapshotMerge struct {
	// open returns the COW and base device opened for writing and the
	// source device opened for reading (nil: the base device is the source
	// device), set by OpenSnapshot or SetMergeFiles; a nil open means the
	// snapshot cannot merge.
	open func() (cowF, base, backing faultfs.File, err error)

	// gate orders the switch to the engine: reads on the pre-merge path
	// hold it shared for their whole duration; PrepareMerge takes it
	// exclusively, so no such read is still running (and could read a
	// source the engine is about to overwrite) once the engine is
	// installed.
	gate     sync.RWMutex
	eng      *merge.Engine // guarded by gate
	prepared bool          // guarded by gate
}

var _ Merger = (*Snapshot)(nil)

// SetMergeFiles lets a snapshot built with NewSnapshot merge into base,
// reading its merge state from (and checkpointing into) cowF and the Copy
// and Xor sources from backing, which must hold the bytes the snapshot's
// source device holds (nil: base is also the source device, as when
// libsnapshot passes <part>-base twice). cowF must hold the same bytes the
// snapshot was parsed from. backing is only read.
func (s *Snapshot) SetMergeFiles(cowF, base, backing faultfs.File) {
	s.mg.open = func() (faultfs.File, faultfs.File, faultfs.File, error) { return cowF, base, backing, nil }
}

// openMergeFiles is the open function of OpenSnapshot: the COW and the base
// device (base_path_merge) opened read-write, and the source device
// (backing_device, <part>-src) opened read-only unless it is the base device
// itself. As in AOSP the merge reads Copy and Xor sources from the source
// device and writes only the base device.
func openMergeFiles(cowPath, backingPath, basePath string) func() (faultfs.File, faultfs.File, faultfs.File, error) {
	return func() (faultfs.File, faultfs.File, faultfs.File, error) {
		same, err := sameDevice(backingPath, basePath)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("snapuserd: merge: %w", err)
		}
		cf, err := faultfs.Open(cowPath)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("snapuserd: opening the COW for merge: %w", err)
		}
		bf, err := faultfs.Open(basePath)
		if err != nil {
			cf.Close()
			return nil, nil, nil, fmt.Errorf("snapuserd: opening the base device for merge: %w", err)
		}
		if same {
			return cf, bf, nil, nil
		}
		sf, err := faultfs.OpenFile(backingPath, os.O_RDONLY, 0)
		if err != nil {
			cf.Close()
			bf.Close()
			return nil, nil, nil, fmt.Errorf("snapuserd: opening the source device for merge: %w", err)
		}
		return cf, bf, sf, nil
	}
}

// PrepareMerge implements Merger.
func (s *Snapshot) PrepareMerge(opts *merge.Options) (*merge.Engine, func() error, error) {
	if s.mg.open == nil {
		return nil, nil, fmt.Errorf("snapuserd: %s: no writable COW and base device to merge into", s.name)
	}
	s.mg.gate.Lock()
	defer s.mg.gate.Unlock()
	if s.mg.prepared {
		return nil, nil, fmt.Errorf("snapuserd: %s: merge already prepared", s.name)
	}
	cf, bf, sf, err := s.mg.open()
	if err != nil {
		return nil, nil, err
	}
	release := func() error {
		err := errors.Join(cf.Close(), bf.Close())
		if sf != nil {
			err = errors.Join(err, sf.Close())
		}
		return err
	}
	var o merge.Options
	if opts != nil {
		o = *opts
	}
	if sf != nil {
		o.Backing = sf
	}
	eng, err := merge.New(cf, bf, s.r, &o)
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("snapuserd: %s: %w", s.name, err)
	}
	s.mg.eng, s.mg.prepared = eng, true
	return eng, release, nil
}

// beginRead returns the merge engine if reads go through it. Otherwise it
// returns nil with the gate held shared; the caller ends with endRead.
func (s *Snapshot) beginRead() *merge.Engine {
	s.mg.gate.RLock()
	if e := s.mg.eng; e != nil {
		s.mg.gate.RUnlock()
		return e
	}
	return nil
}

func (s *Snapshot) endRead() { s.mg.gate.RUnlock() }

func (m *Manager) mergeOptions() merge.Options {
	c := m.cfg.Merge
	return merge.Options{
		MergeSize: c.MergeSize,
		Limiter:   m.limiter,
		IOUring:   c.IOUring,
		Logf:      func(format string, args ...any) { m.log.Debug(fmt.Sprintf(format, args...)) },
	}
}

// initiateMergeLocked starts h's merge (initiate_merge). A second
// initiate_merge of a running or finished merge succeeds without effect.
func (m *Manager) initiateMergeLocked(h *handler) error {
	if h.job != nil && h.job.eng == nil {
		// Preparation failed: a retry reports the same failure (the
		// status stays snapshot-merge-failed).
		return h.job.err
	}
	if h.job != nil && !h.job.stopped {
		return nil
	}
	if h.job != nil {
		return fmt.Errorf("snapuserd: merge of %s was stopped", h.misc)
	}
	mg, ok := h.dev.(Merger)
	if !ok {
		return fmt.Errorf("snapuserd: handler %s cannot merge", h.misc)
	}
	opts := m.mergeOptions()
	eng, release, err := mg.PrepareMerge(&opts)
	if err != nil {
		// Recorded, so that getstatus says snapshot-merge-failed.
		h.job = &mergeJob{err: err, done: make(chan struct{})}
		close(h.job.done)
		m.log.Error("merge cannot start", "misc", h.misc, "err", err)
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	j := &mergeJob{eng: eng, release: release, cancel: cancel, done: make(chan struct{})}
	h.job = j
	if m.paused {
		eng.Pause()
	}
	p := eng.Progress()
	m.log.Info("merge initiated", "misc", h.misc, "num_merge_ops", p.NumMergeOps, "total_ops", p.TotalOps,
		"merge_threads", m.mergeThreads)
	misc := h.misc
	go func() {
		defer close(j.done)
		// The goroutine keeps its thread to itself and never unlocks it:
		// the lowered priority ends with the thread when the goroutine
		// returns, instead of leaking into Go's thread pool.
		runtime.LockOSThread()
		if err := lowerThreadPriority(m.cfg.Merge.Nice, m.cfg.Merge.IdleIO); err != nil {
			m.log.Debug("merge thread priority", "misc", misc, "err", err)
		}
		err := eng.Run(ctx)
		m.mu.Lock()
		stopped := j.stopped
		if err != nil && !(stopped && errors.Is(err, context.Canceled)) {
			j.err = err
		}
		if err == nil {
			// num_partitions_merge_complete_: counts for merge_percent
			// even after the handler is deleted.
			j.counted = true
			m.mergesComplete++
		}
		m.mu.Unlock()
		switch {
		case err == nil:
			m.log.Info("merge complete", "misc", misc)
		case stopped && errors.Is(err, context.Canceled):
			m.log.Info("merge stopped", "misc", misc, "num_merge_ops", eng.Progress().NumMergeOps)
		default:
			m.log.Error("merge failed", "misc", misc, "err", err)
		}
		if m.cfg.Merge.IOUring {
			n, ferr := eng.IOURing()
			m.log.Info("merge I/O", "misc", misc, "uring_writes", n, "sync_fallback", ferr)
		}
	}()
	return nil
}

// stopMergeLocked cancels h's merge; the caller waits on the returned job
// (without m.mu) with waitMerge.
func (m *Manager) stopMergeLocked(h *handler) *mergeJob {
	j := h.job
	if j == nil {
		return nil
	}
	if j.cancel != nil && !j.stopped {
		j.stopped = true
		j.cancel()
	}
	return j
}

// waitMerge waits for a stopped job's goroutine and closes the engine's
// files. The merge state on disk is consistent at any point it stops.
func waitMerge(j *mergeJob) {
	if j == nil {
		return
	}
	<-j.done
	if j.release != nil {
		j.release()
		j.release = nil
	}
}

// mergeStatusLocked is getstatus for an existing handler (snapuserd.md §8).
func mergeStatusLocked(h *handler) string {
	j := h.job
	if j == nil {
		merged, total, failed := progress(h)
		switch {
		case failed:
			return proto.StatusMergeFailed
		case total > 0 && merged >= total:
			// Completion recorded in the header counts even before
			// initiate_merge (reboot after a finished merge).
			return proto.StatusMergeComplete
		}
		return proto.StatusSnapshot
	}
	if j.eng == nil || j.err != nil {
		return proto.StatusMergeFailed
	}
	switch p := j.eng.Progress(); {
	case p.Phase == merge.PhaseComplete:
		return proto.StatusMergeComplete
	case p.Phase == merge.PhaseFailed:
		return proto.StatusMergeFailed
	case j.stopped:
		return proto.StatusSnapshot
	}
	// Idle (the goroutine has not called Run yet), queued for a merge
	// slot, ordered or replace phase, paused or not.
	return proto.StatusMerge
}

// mergePercentLocked is merge_percent as AOSP computes it: (completed×100 +
// Σ in-progress %) / (completed + in-progress), where completed counts every
// partition whose merge finished in this daemon (num_partitions_merge_complete_),
// deleted handlers included, and in-progress every live handler whose merge
// was initiated and has not finished (a failed one at its percentage).
func (m *Manager) mergePercentLocked() float64 {
	n := m.mergesComplete
	sum := 100 * float64(m.mergesComplete)
	for _, h := range m.handlers {
		j := h.job
		if j == nil || h.dev == nil || j.counted {
			continue
		}
		n++
		if j.eng == nil {
			continue // failed before it started: 0 %
		}
		p := j.eng.Progress()
		if p.Phase == merge.PhaseComplete {
			sum += 100
		} else {
			sum += p.Percent
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

// pauseMergesLocked applies pause_merge / resume_merge to every engine.
func (m *Manager) pauseMergesLocked(pause bool) {
	for _, h := range m.handlers {
		if h.job == nil || h.job.eng == nil {
			continue
		}
		if pause {
			h.job.eng.Pause()
		} else {
			h.job.eng.Resume()
		}
	}
}

// MergeProgress returns the engine's progress of misc's merge; ok is false
// if no merge was initiated for it.
func (m *Manager) MergeProgress(misc string) (p merge.Progress, ok bool) {
	m.mu.Lock()
	h := m.handlers[misc]
	var j *mergeJob
	if h != nil {
		j = h.job
	}
	m.mu.Unlock()
	if j == nil || j.eng == nil {
		return merge.Progress{}, false
	}
	return j.eng.Progress(), true
}

// sameDevice reports whether two paths name the same file, or block device
// nodes of the same device (/dev/block/dm-3 and /dev/dm-3).
func sameDevice(a, b string) (bool, error) {
	fa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	if os.SameFile(fa, fb) {
		return true, nil
	}
	isBlock := func(fi os.FileInfo) bool { return fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0 }
	sa, okA := fa.Sys().(*syscall.Stat_t)
	sb, okB := fb.Sys().(*syscall.Stat_t)
	return okA && okB && isBlock(fa) && isBlock(fb) && sa.Rdev == sb.Rdev, nil
}
