// Package snapuserdtest runs an in-process snapuserd (Manager + control
// server on a temporary Unix socket) for black-box tests of clients and
// tools, in the style of tailscale's lapitest.
package snapuserdtest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/proto"
)

// Server is a running daemon.
type Server struct {
	Socket   string
	Manager  *snapuserd.Manager
	Frontend *snapuserd.EmulatedDmUser
	Done     chan error // receives Run's result
}

// NewServer starts a daemon whose handlers open real snapshots
// (snapuserd.OpenSnapshot) and are exported through the in-process dm-user
// emulation. It is stopped with t.Cleanup.
func NewServer(t testing.TB) *Server {
	t.Helper()
	fe := &snapuserd.EmulatedDmUser{Workers: 2}
	m := snapuserd.NewManager(snapuserd.Config{
		Frontend:    fe,
		Open:        func(req proto.InitRequest) (snapuserd.Device, error) { return snapuserd.OpenSnapshot(req, nil) },
		StopCancels: true,
	})
	sock := filepath.Join(t.TempDir(), "snapuserd.sock")
	ln, err := proto.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Socket: sock, Manager: m, Frontend: fe, Done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	srv := proto.NewServer(m, nil)
	go func() { s.Done <- srv.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		m.Shutdown()
	})
	return s
}
