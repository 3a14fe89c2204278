package proto

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// memDaemon is a real Daemon over files: init stats the base device for
// its size, handlers live in a map with their lifecycle, and merges advance
// only when the test calls advance (standing in for the merge worker).
type memDaemon struct {
	mu       sync.Mutex
	handlers map[string]*memHandler
	order    []string
	paused   bool
	detached bool
	stopped  bool
}

type memHandler struct {
	req       InitRequest
	sectors   uint64
	started   bool
	merging   bool
	merged    uint64
	total     uint64
	failed    bool
	verifyErr error
}

func newMemDaemon() *memDaemon { return &memDaemon{handlers: map[string]*memHandler{}} }

func (d *memDaemon) InitHandler(req InitRequest) (uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if req.Legacy {
		return 0, errors.New("legacy dm-snapshot mode not supported")
	}
	if _, ok := d.handlers[req.Misc]; ok {
		return 0, fmt.Errorf("handler %s already exists", req.Misc)
	}
	cow, err := os.Stat(req.Cow)
	if err != nil {
		return 0, err
	}
	base, err := os.Stat(req.BasePath)
	if err != nil {
		return 0, err
	}
	if _, err := os.Stat(req.Backing); err != nil {
		return 0, err
	}
	d.handlers[req.Misc] = &memHandler{req: req, sectors: uint64(base.Size()) / 512, total: uint64(cow.Size()) / 4096}
	d.order = append(d.order, req.Misc)
	return uint64(base.Size()) / 512, nil
}

func (d *memDaemon) StartHandler(misc string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	h, ok := d.handlers[misc]
	switch {
	case !ok:
		return fmt.Errorf("no handler %s", misc)
	case h.started:
		return fmt.Errorf("handler %s already attached", misc)
	}
	h.started = true
	return nil
}

func (d *memDaemon) DeleteHandler(misc string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.handlers, misc)
	return nil
}

func (d *memDaemon) InitiateMerge(misc string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	h, ok := d.handlers[misc]
	if !ok || !h.started {
		return fmt.Errorf("handler %s not attached", misc)
	}
	h.merging = true
	return nil
}

func (d *memDaemon) advance(misc string, n uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	h := d.handlers[misc]
	if h.merging && !d.paused {
		h.merged = min(h.total, h.merged+n)
	}
}

func (d *memDaemon) MergePercent() float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	var done, inProgress int
	var sum float64
	for _, h := range d.handlers {
		switch {
		case h.merging && h.merged == h.total:
			done++
		case h.merging:
			inProgress++
			sum += float64(h.merged) * 100 / float64(h.total)
		}
	}
	if done+inProgress == 0 {
		return 0
	}
	return (float64(done)*100 + sum) / float64(done+inProgress)
}

func (d *memDaemon) MergeStatus(misc string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	h, ok := d.handlers[misc]
	switch {
	case !ok || h.failed:
		return StatusMergeFailed
	case h.merging && h.merged == h.total:
		return StatusMergeComplete
	case h.merging:
		return StatusMerge
	}
	return StatusSnapshot
}

func (d *memDaemon) UpdateVerify() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, h := range d.handlers {
		if h.verifyErr != nil {
			return false
		}
	}
	return true
}

func (d *memDaemon) PauseMerge()  { d.mu.Lock(); d.paused = true; d.mu.Unlock() }
func (d *memDaemon) ResumeMerge() { d.mu.Lock(); d.paused = false; d.mu.Unlock() }
func (d *memDaemon) Detach()      { d.mu.Lock(); d.detached = true; d.mu.Unlock() }
func (d *memDaemon) Stop()        { d.mu.Lock(); d.stopped = true; d.mu.Unlock() }

var _ Daemon = (*memDaemon)(nil)

type env struct {
	d    *memDaemon
	s    *Server
	path string
	run  chan error
	dir  string
}

func newEnv(t *testing.T, opts *Options) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{d: newMemDaemon(), dir: dir, path: filepath.Join(dir, "snapuserd"), run: make(chan error, 1)}
	e.s = NewServer(e.d, opts)
	ln, err := Listen(e.path)
	if err != nil {
		t.Fatal(err)
	}
	go func() { e.run <- e.s.Run(t.Context(), ln) }()
	for _, f := range []struct {
		name string
		size int64
	}{{"cow", 40960}, {"src", 8192}, {"base", 1 << 20}} {
		if err := os.WriteFile(filepath.Join(dir, f.name), make([]byte, f.size), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e *env) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", e.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends one message and reads one reply ("" and io.EOF when the
// server sends nothing and closes).
func roundTrip(t *testing.T, c net.Conn, msg string) (string, error) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, MaxPacketSize)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

func (e *env) init(name string) string {
	return fmt.Sprintf("init,%s,%s,%s,%s", name, filepath.Join(e.dir, "cow"), filepath.Join(e.dir, "src"), filepath.Join(e.dir, "base"))
}

func TestCommandsExactReplies(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(t)
	steps := []struct{ msg, want string }{
		{"query", "active"},
		{"supports,second_stage_socket_handoff", "success"},
		{"supports,io_uring", "fail"},
		{"getstatus,system", "snapshot-merge-failed"},
		{e.init("system"), "success,2048"},
		{e.init("system"), "fail"}, // already exists
		{"getstatus,system", "snapshot"},
		{"initiate_merge,system", "fail"}, // not attached yet
		{"start,system", "success"},
		{"start,system", "fail"}, // already attached
		{"start,vendor", "fail"}, // unknown
		{"merge_percent", "0.000000"},
		{"initiate_merge,system", "success"},
		{"getstatus,system", "snapshot-merge"},
		{e.init("vendor"), "success,2048"},
		{"start,vendor", "success"},
		{"initiate_merge,vendor", "success"},
		{"update-verify", "success"},
		{"pause_merge", "success"},
		{"resume_merge", "success"},
		{"delete,vendor", "success"},
		{"delete,vendor", "success"}, // not found is success
		{"getstatus,vendor", "snapshot-merge-failed"},
		{"init,x," + filepath.Join(e.dir, "missing") + ",a,b", "fail"},
		{"init,legacy," + filepath.Join(e.dir, "cow") + "," + filepath.Join(e.dir, "src"), "fail"}, // legacy form: no Mode A
	}
	for i, s := range steps {
		got, err := roundTrip(t, c, s.msg)
		if err != nil || got != s.want {
			t.Fatalf("step %d %q: got %q (%v), want %q", i, s.msg, got, err, s.want)
		}
		if s.msg == "initiate_merge,system" && got == "success" {
			// 10 blocks in the COW; merge 3 of them.
			e.d.advance("system", 3)
			if got, _ := roundTrip(t, c, "merge_percent"); got != "30.000000" {
				t.Fatalf("merge_percent after 3/10: %q", got)
			}
		}
	}
	// pause stops progress, resume lets it continue.
	roundTrip(t, c, "pause_merge")
	e.d.advance("system", 7)
	if got, _ := roundTrip(t, c, "getstatus,system"); got != "snapshot-merge" {
		t.Fatalf("paused merge progressed: %q", got)
	}
	roundTrip(t, c, "resume_merge")
	e.d.advance("system", 7)
	if got, _ := roundTrip(t, c, "getstatus,system"); got != "snapshot-merge-complete" {
		t.Fatalf("status after full merge: %q", got)
	}
	if got, _ := roundTrip(t, c, "merge_percent"); got != "100.000000" {
		t.Fatalf("merge_percent after completion: %q", got)
	}
	e.d.mu.Lock()
	e.d.handlers["system"].verifyErr = errors.New("hash mismatch")
	e.d.mu.Unlock()
	if got, _ := roundTrip(t, c, "update-verify"); got != "fail" {
		t.Fatalf("update-verify with a failed handler: %q", got)
	}
}

func TestMalformed(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct {
		name   string
		msg    string
		want   string
		closed bool // server closes the connection after replying
	}{
		{"init-3-fields", "init,a,b", "fail", false},
		{"init-6-fields", "init,a,b,c,d,e", "fail", false},
		{"init-1-field", "init", "fail", false},
		{"start-no-name", "start", "fail", false},
		{"start-3-fields", "start,a,b", "fail", false},
		{"delete-no-name", "delete", "fail", false},
		{"initiate-merge-no-name", "initiate_merge", "fail", false},
		{"getstatus-no-name", "getstatus", "snapshot-merge-failed", false},
		{"getstatus-3", "getstatus,a,b", "snapshot-merge-failed", false},
		{"supports-no-feature", "supports", "fail", false},
		{"unknown", "frobnicate,x", "fail", true},
		{"empty-command", ",query", "fail", true},
		{"case-sensitive", "QUERY", "fail", true},
		{"trailing-newline", "query\n", "fail", true},
		{"binary-junk", "\x00\xff\x01\xfe,\x80", "fail", true},
		{"oversize-first-512", strings.Repeat("A", 700), "fail", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(t)
			got, err := roundTrip(t, c, tc.msg)
			if err != nil || got != tc.want {
				t.Fatalf("got %q (%v), want %q", got, err, tc.want)
			}
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, err := c.Read(make([]byte, 16))
			if tc.closed && !(n == 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET))) {
				t.Errorf("connection not closed after unknown command: n=%d err=%v", n, err)
			}
			if !tc.closed {
				if got, err := roundTrip(t, c, "query"); got != "active" {
					t.Errorf("connection unusable after malformed message: %q %v", got, err)
				}
			}
		})
	}
	t.Run("oversize-split-into-messages", func(t *testing.T) {
		// 512 bytes of a padded query-like init are one message, the rest the next.
		c := e.dial(t)
		msg := "getstatus," + strings.Repeat("x", 502) + "query"
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		// Two replies on a byte stream: the 512-byte getstatus of an unknown
		// name, then "query" from the remaining bytes.
		want := "snapshot-merge-failed" + "active"
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, len(want))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != want {
			t.Fatalf("replies %q (%v), want %q", buf, err, want)
		}
	})
	t.Run("abrupt-close", func(t *testing.T) {
		for range 20 {
			c, err := net.Dial("unix", e.path)
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte("init,a"))
			c.Close()
		}
		c := e.dial(t)
		if got, err := roundTrip(t, c, "query"); got != "active" {
			t.Fatalf("server after abrupt closes: %q %v", got, err)
		}
	})
}

func TestStopAndDetach(t *testing.T) {
	for _, cmd := range []string{"stop", "detach"} {
		t.Run(cmd, func(t *testing.T) {
			e := newEnv(t, nil)
			other := e.dial(t)
			c := e.dial(t)
			if got, _ := roundTrip(t, c, "query"); got != "active" {
				t.Fatal(got)
			}
			got, err := roundTrip(t, c, cmd)
			if got != "" || !errors.Is(err, io.EOF) {
				t.Fatalf("%s: got reply %q err %v, want no reply and close", cmd, got, err)
			}
			select {
			case err := <-e.run:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return")
			}
			other.SetReadDeadline(time.Now().Add(time.Second))
			if n, err := other.Read(make([]byte, 8)); n != 0 || err == nil {
				t.Errorf("other connection still open: %d %v", n, err)
			}
			e.d.mu.Lock()
			defer e.d.mu.Unlock()
			if cmd == "stop" && !e.d.stopped || cmd == "detach" && !e.d.detached {
				t.Errorf("daemon not told: stopped=%v detached=%v", e.d.stopped, e.d.detached)
			}
			if _, err := net.Dial("unix", e.path); err == nil {
				t.Error("listener still accepting")
			}
		})
	}
}

func TestCancel(t *testing.T) {
	dir := t.TempDir()
	ln, err := Listen(filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := contextWithCancel(t)
	s := NewServer(newMemDaemon(), nil)
	res := make(chan error, 1)
	go func() { res <- s.Run(ctx, ln) }()
	c, err := net.Dial("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, _ := roundTrip(t, c, "query"); got != "active" {
		t.Fatal(got)
	}
	cancel()
	select {
	case err := <-res:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestPeerCredentials(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("test assumes it runs as root (uid 0 is always allowed)")
	}
	e := newEnv(t, &Options{AllowUIDs: []int{4242}})
	c := e.dial(t)
	if got, _ := roundTrip(t, c, "query"); got != "active" {
		t.Fatalf("root peer: %q", got)
	}
	// Drop root from the allowed set: the same peer is now refused.
	e.s.mu.Lock()
	e.s.allow = map[int]bool{4242: true}
	e.s.mu.Unlock()
	c2 := e.dial(t)
	got, err := roundTrip(t, c2, "query")
	if got != "" || err == nil {
		t.Fatalf("refused peer got %q %v", got, err)
	}
}

func TestListenStale(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sock")
	ln, err := Listen(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(p); err == nil {
		t.Error("second Listen on a live socket succeeded")
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln2, err := Listen(p) // stale socket file is replaced
	if err != nil {
		t.Fatal(err)
	}
	ln2.Close()
	fi, _ := os.Stat(p)
	if fi != nil && fi.Mode().Perm() != 0o660 {
		t.Errorf("mode %v", fi.Mode())
	}
	if SocketPath("snapuserd") != "/dev/socket/snapuserd" || SocketPath("/tmp/x") != "/tmp/x" {
		t.Error("SocketPath")
	}
}

func FuzzDispatch(f *testing.F) {
	for _, s := range []string{"query", "init,a,b,c,d", "init,a,b,c", "start,a", "getstatus", "supports,second_stage_socket_handoff", "\x00,,,", "merge_percent,x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg string) {
		if len(msg) > MaxPacketSize {
			msg = msg[:MaxPacketSize]
		}
		s := NewServer(newMemDaemon(), nil)
		reply, _ := s.Dispatch(msg)
		if len(reply) > MaxPacketSize {
			t.Fatalf("reply too long: %d", len(reply))
		}
	})
}
