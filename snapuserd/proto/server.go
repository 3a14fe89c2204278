package proto

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// MaxPacketSize is the receive buffer of both ends (kMaxPacketSize /
// PACKET_SIZE); a longer send is read as several messages.
const MaxPacketSize = 512

// Merge status strings (GetMergeStatus).
const (
	StatusSnapshot         = "snapshot"
	StatusMerge            = "snapshot-merge"
	StatusMergeComplete    = "snapshot-merge-complete"
	StatusMergeFailed      = "snapshot-merge-failed"
	ReplySuccess           = "success"
	ReplyFail              = "fail"
	ReplyActive            = "active"
	ReplyPassive           = "passive"
	FeatureSocketHandoff   = "second_stage_socket_handoff"
	DefaultSocketName      = "snapuserd"
	AndroidSocketDir       = "/dev/socket"
	androidSocketEnvPrefix = "ANDROID_SOCKET_"
)

// InitRequest is a parsed init message.
type InitRequest struct {
	Misc     string // dm-user misc name (control node /dev/dm-user/<Misc>)
	Cow      string // COW device
	Backing  string // source (backing) device
	BasePath string // base_path_merge; empty for the legacy 4-field form
	Legacy   bool   // 4-field Android 12 form (dm-snapshot compat, Mode A)
	// Peer is the non-root client that sent the request; the daemon must
	// open the paths with its access rights (see the trust model in
	// peer.go). nil for root clients and the daemon's own argv.
	Peer *Peer
}

// Daemon is what the control server drives; the snapshot handler manager
// implements it. Methods may be called from several connections, one at a
// time (the server serialises commands like AOSP's single poll loop).
type Daemon interface {
	// InitHandler creates (but does not start) a handler and returns the
	// size of the device it serves in 512-byte sectors.
	InitHandler(req InitRequest) (numSectors uint64, err error)
	// StartHandler attaches a created handler (starts its workers); it
	// fails for unknown or already started handlers.
	StartHandler(misc string) error
	// DeleteHandler tears a handler down; unknown names are not an error.
	DeleteHandler(misc string) error
	// InitiateMerge queues an attached handler for merge.
	InitiateMerge(misc string) error
	// MergePercent is the daemon-wide merge progress in percent.
	MergePercent() float64
	// MergeStatus returns one of the Status* strings.
	MergeStatus(misc string) string
	// UpdateVerify reports whether every live handler verified OK.
	UpdateVerify() bool
	PauseMerge()
	ResumeMerge()
	// Detach signals IO-terminated to every handler (merge and read-ahead
	// stop); the daemon exits once the handlers finish.
	Detach()
	// Stop marks the daemon terminating and waits for its handlers.
	Stop()
}

// Options configures a Server.
type Options struct {
	// AllowUIDs are peers besides root allowed to send commands (checked
	// with SO_PEERCRED). AOSP relies on the socket's 0660 system:system
	// mode; here the check is explicit.
	AllowUIDs []int
	Logger    *slog.Logger
}

// Server serves the control protocol. Create it with NewServer.
type Server struct {
	d   Daemon
	log *slog.Logger

	cmdMu   sync.Mutex // serialises command execution (AOSP: one poll loop)
	curPeer *Peer      // guarded by cmdMu: the non-root sender of the command running

	mu          sync.Mutex // guards the fields that follow
	allow       map[int]bool
	terminating bool
	conns       map[net.Conn]struct{}
	done        chan struct{} // closed when a command ends the server
}

// NewServer returns a server driving d.
func NewServer(d Daemon, opts *Options) *Server {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{d: d, log: o.Logger, allow: map[int]bool{0: true}, conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
	for _, u := range o.AllowUIDs {
		s.allow[u] = true
	}
	return s
}

// Terminating reports whether stop or detach was received.
func (s *Server) Terminating() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.terminating
}

// Done is closed when stop or detach was received.
func (s *Server) Done() <-chan struct{} { return s.done }

func (s *Server) terminate() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.terminating {
		s.terminating = true
		close(s.done)
	}
}

// Run accepts connections on ln until ctx ends or a client sends stop or
// detach. It closes ln and every connection before returning. Cancellation
// and stop/detach are clean exits (nil).
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, s.terminateQuiet)
	defer stop()
	go func() {
		<-s.done
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	}()
	defer s.terminateQuiet()
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.Terminating() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("snapuserd: accept: %w", err)
		}
		s.mu.Lock()
		if s.terminating {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		wg.Go(func() {
			s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		})
	}
}

// terminateQuiet ends Run without a command (context cancelled).
func (s *Server) terminateQuiet() { s.terminate() }

// peerAllowed checks SO_PEERCRED of a Unix connection and returns the
// Peer to act for (nil for root). Non-Unix connections (tests over
// net.Pipe) carry no credentials and are allowed as root.
func (s *Server) peerAllowed(c net.Conn) (bool, *Peer, string) {
	cred, err := connCred(c)
	if err != nil {
		return false, nil, err.Error()
	}
	if cred == nil {
		return true, nil, "no credentials (not a unix socket)"
	}
	desc := fmt.Sprintf("pid %d uid %d", cred.Pid, cred.Uid)
	s.mu.Lock()
	ok := s.allow[int(cred.Uid)]
	s.mu.Unlock()
	if !ok || cred.Uid == 0 {
		return ok, nil, desc
	}
	p, err := peerOf(cred)
	if err != nil {
		return false, nil, desc + ": " + err.Error()
	}
	return true, p, desc
}

func (s *Server) serveConn(c net.Conn) {
	ok, peer, who := s.peerAllowed(c)
	if !ok {
		s.log.Warn("rejecting control connection", "peer", who)
		return
	}
	buf := make([]byte, MaxPacketSize)
	for {
		n, err := c.Read(buf)
		if n == 0 || err != nil {
			return // client gone (POLLHUP / empty read)
		}
		reply, keep := s.dispatch(peer, string(buf[:n]))
		if reply != "" {
			if _, err := c.Write([]byte(reply)); err != nil {
				return
			}
		}
		if !keep {
			return
		}
	}
}

// Dispatch executes one message and returns the reply ("" = none) and
// whether the connection stays open. Exposed for tests and for embedding
// the protocol in other transports.
func (s *Server) Dispatch(msg string) (reply string, keep bool) { return s.dispatch(nil, msg) }

// dispatch is Dispatch on behalf of peer (nil: root).
func (s *Server) dispatch(peer *Peer, msg string) (reply string, keep bool) {
	s.cmdMu.Lock()
	defer s.cmdMu.Unlock()
	s.curPeer = peer
	defer func() { s.curPeer = nil }()
	fields := strings.Split(msg, ",")
	// AOSP's parser drops empty trailing fields ("start,system," is
	// start,system).
	for len(fields) > 1 && fields[len(fields)-1] == "" {
		fields = fields[:len(fields)-1]
	}
	cmd, found := commands[fields[0]]
	if !found {
		s.log.Error("received unknown message type from client", "msg", printable(msg))
		return ReplyFail, false
	}
	s.log.Debug("control command", "cmd", fields[0], "fields", len(fields))
	return cmd(s, fields)
}

// printable quotes msg for logs, bounded.
func printable(msg string) string {
	if len(msg) > 64 {
		msg = msg[:64] + "…"
	}
	return fmt.Sprintf("%q", msg)
}

// SocketPath resolves the -socket flag: a bare name lives in Android's
// reserved socket directory, anything with a slash is a path.
func SocketPath(name string) string {
	if name == "" {
		name = DefaultSocketName
	}
	if strings.ContainsRune(name, '/') {
		return name
	}
	return filepath.Join(AndroidSocketDir, name)
}

// Listen returns the control listener: the socket init passed in
// ANDROID_SOCKET_<name> if present, else a fresh Unix socket at path (a
// stale socket file is removed first), created with mode 0660.
func Listen(name string) (net.Listener, error) {
	if name == "" {
		name = DefaultSocketName
	}
	if v := os.Getenv(androidSocketEnvPrefix + filepath.Base(name)); v != "" {
		var fd int
		if _, err := fmt.Sscanf(v, "%d", &fd); err == nil && fd >= 0 {
			f := os.NewFile(uintptr(fd), "android-socket-"+name)
			ln, err := net.FileListener(f)
			f.Close()
			if err == nil {
				return ln, nil
			}
		}
	}
	path := SocketPath(name)
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		// Remove a stale socket only if nobody answers on it.
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("snapuserd: socket %s is in use by a running daemon", path)
		}
		os.Remove(path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	return listenUnixMode("unix", path)
}
