package proto

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ProxySocketName is the SOCK_SEQPACKET socket over which the control
// socket's listening fd is handed to the first-stage daemon (spec §10).
const ProxySocketName = "snapuserd_proxy"

// ProxyPath derives the proxy socket from the -socket value: the Android
// name in /dev/socket, or "<path>_proxy" beside a socket given as a path.
func ProxyPath(socket string) string {
	if strings.ContainsRune(socket, '/') {
		return socket + "_proxy"
	}
	return filepath.Join(AndroidSocketDir, ProxySocketName)
}

// handoffByte is the one-byte payload of the fd message and of the ack.
const handoffByte = 'a'

// ListenProxy returns the proxy listener: ANDROID_SOCKET_snapuserd_proxy
// from init if set, else a fresh SOCK_SEQPACKET socket at path.
func ListenProxy(path string) (*net.UnixListener, error) {
	if v := os.Getenv(androidSocketEnvPrefix + ProxySocketName); v != "" {
		var fd int
		if _, err := fmt.Sscanf(v, "%d", &fd); err == nil && fd >= 0 {
			f := os.NewFile(uintptr(fd), "android-socket-"+ProxySocketName)
			ln, err := net.FileListener(f)
			f.Close()
			if err == nil {
				if ul, ok := ln.(*net.UnixListener); ok {
					return ul, nil
				}
				ln.Close()
			}
		}
	}
	os.Remove(path)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	return listenUnixMode("unixpacket", path)
}

// ServeHandoff is snapuserd -socket_handoff: accept one client on proxy,
// send it ctrl's listening fd (SCM_RIGHTS, payload 'a'), wait for its
// one-byte ack. ctrl is not closed; its path is left in place.
func ServeHandoff(ctx context.Context, proxy *net.UnixListener, ctrl *net.UnixListener) error {
	stop := context.AfterFunc(ctx, func() { proxy.Close() })
	defer stop()
	conn, err := proxy.AcceptUnix()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("snapuserd proxy: accept: %w", err)
	}
	defer conn.Close()
	f, err := ctrl.File() // a dup of the listening socket
	if err != nil {
		return fmt.Errorf("snapuserd proxy: control socket fd: %w", err)
	}
	defer f.Close()
	if _, _, err := conn.WriteMsgUnix([]byte{handoffByte}, unix.UnixRights(int(f.Fd())), nil); err != nil {
		return fmt.Errorf("snapuserd proxy: sending the control socket: %w", err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ack [1]byte
	if n, err := conn.Read(ack[:]); err != nil || n != 1 || ack[0] != handoffByte {
		return fmt.Errorf("snapuserd proxy: bad ack (%d bytes, %q): %v", n, ack[:n], err)
	}
	return nil
}

// ReceiveHandoff is the running daemon's side (WaitForSocket): wait for
// the proxy socket to appear, connect, receive the control listener, ack.
// The proxy must be root or run as this daemon's uid (SO_PEERCRED): the
// received fd becomes the control socket, so a listener handed over by
// anyone else would let that process choose who controls the daemon.
func ReceiveHandoff(ctx context.Context, proxyPath string) (net.Listener, error) {
	var conn *net.UnixConn
	for {
		c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: proxyPath, Net: "unixpacket"})
		if err == nil {
			conn = c
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	defer conn.Close()
	cred, err := connCred(conn)
	if err != nil {
		return nil, fmt.Errorf("snapuserd: hand-off peer: %w", err)
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("snapuserd: refusing the hand-off from pid %d uid %d on %s (not root or uid %d)",
			cred.Pid, cred.Uid, proxyPath, os.Geteuid())
	}
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("snapuserd: receiving the control socket: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 || n != 1 || buf[0] != handoffByte {
		return nil, fmt.Errorf("snapuserd: malformed hand-off message (%d bytes, %d control messages): %v", n, len(msgs), err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, errors.New("snapuserd: hand-off message carries no single fd")
	}
	f := os.NewFile(uintptr(fds[0]), "snapuserd-control")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("snapuserd: handed-off fd is not a listener: %w", err)
	}
	if _, err := conn.Write([]byte{handoffByte}); err != nil {
		ln.Close()
		return nil, fmt.Errorf("snapuserd: ack: %w", err)
	}
	return ln, nil
}
