package snapuserd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Partition verification (update-verify, spec snapuserd.md §8): each handler
// reads its whole device once in the background — at start, when
// Config.VerifyOnStart is set (the second-stage boot daemon), else on the
// first update-verify — with O_DIRECT reads of Config.VerifyDevice(misc) (the
// dm-verity device stacked on the partition) or, without one, through the
// handler's own read path. update-verify waits for the verifications at most
// Config.VerifyTimeout and reports success only if every live handler
// verified OK.

// DefaultVerifyTimeout bounds the update-verify wait.
const DefaultVerifyTimeout = 10 * time.Second

// verifyChunk is the size of one verification read (AOSP: 1 MiB blocks).
const verifyChunk = 1 << 20

// verifyJob is one handler's verification. err is written by the
// verification goroutine before done is closed.
type verifyJob struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// skipVerifyOnStart reports whether AOSP would not verify h at start: the
// first-stage (-init) handlers and handlers resuming a merge.
func skipVerifyOnStart(h *handler) bool {
	if strings.HasSuffix(h.misc, "-init") {
		return true
	}
	merged, _, _ := progress(h)
	return merged > 0
}

// startVerifyLocked starts h's verification once.
func (m *Manager) startVerifyLocked(h *handler) *verifyJob {
	if h.verify != nil {
		return h.verify
	}
	ctx, cancel := context.WithCancel(context.Background())
	j := &verifyJob{cancel: cancel, done: make(chan struct{})}
	h.verify = j
	path := ""
	if m.cfg.VerifyDevice != nil {
		path = m.cfg.VerifyDevice(h.misc)
	}
	dev := h.dev
	misc := h.misc
	go func() {
		defer close(j.done)
		t0 := time.Now()
		if path != "" {
			j.err = verifyPath(ctx, path)
		} else {
			j.err = verifyDevice(ctx, dev)
		}
		if j.err != nil {
			m.log.Error("update verification failed", "misc", misc, "device", path, "err", j.err)
		} else {
			m.log.Info("update verification done", "misc", misc, "device", path, "took", time.Since(t0))
		}
	}()
	return j
}

// stopVerify cancels a verification and waits for it.
func stopVerify(j *verifyJob) {
	if j != nil {
		j.cancel()
		<-j.done
	}
}

// UpdateVerify implements proto.Daemon: it starts the verifications not yet
// started, waits for all of them at most Config.VerifyTimeout, and reports
// whether every live handler verified OK.
func (m *Manager) UpdateVerify() bool {
	m.mu.Lock()
	type pending struct {
		misc string
		j    *verifyJob
	}
	var js []pending
	for _, h := range m.handlers {
		if h.dev != nil {
			js = append(js, pending{h.misc, m.startVerifyLocked(h)})
		}
	}
	m.mu.Unlock()
	timeout := m.cfg.VerifyTimeout
	if timeout <= 0 {
		timeout = DefaultVerifyTimeout
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	ok := true
	for _, p := range js {
		select {
		case <-p.j.done:
			if p.j.err != nil {
				ok = false
			}
		case <-deadline.C:
			m.log.Error("update verification not finished in time", "misc", p.misc, "timeout", timeout)
			return false
		}
	}
	return ok
}

// verifyDevice reads d end to end through the handler's read path.
func verifyDevice(ctx context.Context, d Device) error {
	buf := make([]byte, verifyChunk)
	for off := int64(0); off < d.Size(); off += int64(len(buf)) {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(int64(len(buf)), d.Size()-off)
		if err := d.ReadSectors(buf[:n], uint64(off/512)); err != nil {
			return fmt.Errorf("read at %d: %w", off, err)
		}
	}
	return nil
}

// verifyPath reads the block device at path end to end with O_DIRECT, so
// that the reads go through the whole stack (verity → snapshot) instead of
// the page cache.
func verifyPath(ctx context.Context, path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|oDirect, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := deviceSize(f)
	if err != nil {
		return err
	}
	buf := alignedBuf(verifyChunk)
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		off += int64(n)
		if err != nil && !(errors.Is(err, io.EOF) && off == size) {
			return fmt.Errorf("%s: read at %d: %w", path, off, err)
		}
	}
	return nil
}
