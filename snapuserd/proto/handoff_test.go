package proto

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

func TestHandoff(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "snapuserd")
	ctrl, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ul := ctrl.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	proxyPath := ProxyPath(sock)
	if proxyPath != sock+"_proxy" || ProxyPath("snapuserd") != "/dev/socket/snapuserd_proxy" {
		t.Fatalf("ProxyPath %q", proxyPath)
	}
	got := make(chan net.Listener, 1)
	go func() {
		ln, err := ReceiveHandoff(t.Context(), proxyPath)
		if err != nil {
			t.Error(err)
		}
		got <- ln
	}()
	time.Sleep(150 * time.Millisecond) // the receiver polls for the proxy socket
	proxy, err := ListenProxy(proxyPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := ServeHandoff(t.Context(), proxy, ul); err != nil {
		t.Fatal(err)
	}
	proxy.Close()
	ctrl.Close() // the proxy exits; the daemon keeps its copy
	ln := <-got
	if ln == nil {
		t.Fatal("no listener received")
	}
	e := &env{d: newMemDaemon(), path: sock, run: make(chan error, 1)}
	e.s = NewServer(e.d, nil)
	go func() { e.run <- e.s.Run(t.Context(), ln) }()
	c := e.dial(t)
	if r, err := roundTrip(t, c, "query"); r != "active" {
		t.Fatalf("query over the handed-off socket: %q %v", r, err)
	}
}
