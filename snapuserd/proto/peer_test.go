package proto

import (
	"context"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// asUID runs f on a locked thread whose effective uid and gid are uid (real
// and saved ids stay root); the thread is discarded afterwards. Sockets
// connected or listening from f carry uid in SO_PEERCRED.
func asUID(t *testing.T, uid int, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to take another uid")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
			t.Errorf("setresgid: %v", e)
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
			t.Errorf("setresuid: %v", e)
			return
		}
		f()
	}()
	<-done
}

// openDirs makes t.TempDir's directories (0700) searchable by other uids.
func openDirs(t *testing.T, dir string) {
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCheckMiscName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"system", true}, {"system_b-init", true}, {"a.b..c", true}, {string(make([]byte, 0)), false},
		{"../victim", false}, {"..", false}, {".", false}, {"a/b", false}, {"/abs", false},
		{"a\x00", false}, {"a,b", false}, {"tab\t", false}, {"del\x7f", false},
		{string(make([]byte, MaxMiscNameLen+1)), false},
	} {
		if err := CheckMiscName(tc.name); (err == nil) != tc.ok {
			t.Errorf("CheckMiscName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// TestNonRootPeerInit: init from an allowed non-root client carries its
// credentials and groups to the daemon (which opens the paths with them);
// root clients carry none.
func TestNonRootPeerInit(t *testing.T) {
	const uid = 23456
	e := newEnv(t, &Options{AllowUIDs: []int{uid}})
	openDirs(t, e.dir)
	if err := os.Chmod(e.path, 0o666); err != nil { // let the test's uid connect
		t.Fatal(err)
	}
	var reply string
	asUID(t, uid, func() {
		c, err := net.Dial("unix", e.path)
		if err != nil {
			t.Errorf("dial as uid %d: %v", uid, err)
			return
		}
		defer c.Close()
		reply, _ = roundTrip(t, c, "init,peer,"+e.dir+"/cow,"+e.dir+"/src,"+e.dir+"/base")
	})
	if reply == "" || reply == ReplyFail {
		t.Fatalf("init as uid %d: %q", uid, reply)
	}
	c := e.dial(t)
	if r, _ := roundTrip(t, c, "init,rootpeer,"+e.dir+"/cow,"+e.dir+"/src,"+e.dir+"/base"); r == ReplyFail {
		t.Fatalf("init as root: %q", r)
	}
	e.d.mu.Lock()
	defer e.d.mu.Unlock()
	p := e.d.handlers["peer"].req.Peer
	if p == nil || p.UID != uid || p.GID != uid || p.PID != int32(os.Getpid()) {
		t.Fatalf("peer of the non-root init: %+v", p)
	}
	if rp := e.d.handlers["rootpeer"].req.Peer; rp != nil {
		t.Fatalf("root init carries peer %+v", rp)
	}
}

// TestReceiveHandoffPeer: the daemon takes the control socket only from a
// proxy running as root or as its own uid.
func TestReceiveHandoffPeer(t *testing.T) {
	dir := t.TempDir()
	openDirs(t, dir)
	if err := os.Chmod(dir, 0o777); err != nil { // the other uid binds the proxy here
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "snapuserd")
	ctrl, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Close()
	proxyPath := ProxyPath(sock)
	var proxy *net.UnixListener
	asUID(t, 23456, func() {
		// The listener's SO_PEERCRED is taken at listen time.
		proxy, err = net.ListenUnix("unixpacket", &net.UnixAddr{Name: proxyPath, Net: "unixpacket"})
	})
	if err != nil || proxy == nil {
		t.Fatalf("proxy listen as another uid: %v", err)
	}
	defer proxy.Close()
	served := make(chan error, 1)
	go func() { served <- ServeHandoff(t.Context(), proxy, ctrl.(*net.UnixListener)) }()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	ln, err := ReceiveHandoff(ctx, proxyPath)
	if err == nil {
		ln.Close()
		t.Fatal("control socket accepted from a proxy of uid 23456")
	}
	t.Log(err)
	if err := <-served; err == nil {
		t.Error("the refused proxy got an ack")
	}
}

// TestListenMode: the control and proxy sockets never exist with a mode
// other than 0660 (no chmod after bind: inotify sees no attribute change).
func TestListenMode(t *testing.T) {
	dir := t.TempDir()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Skip("inotify:", err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_ATTRIB|unix.IN_CREATE); err != nil {
		t.Fatal(err)
	}
	old := unix.Umask(0) // the widest umask: the mode must not depend on it
	defer unix.Umask(old)
	ln, err := Listen(filepath.Join(dir, "snapuserd"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pl, err := ListenProxy(filepath.Join(dir, "snapuserd_proxy"))
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	for _, n := range []string{"snapuserd", "snapuserd_proxy"} {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil || fi.Mode().Perm() != 0o660 || fi.Mode()&os.ModeSocket == 0 {
			t.Errorf("%s: %v %v", n, fi, err)
		}
	}
	buf := make([]byte, 4096)
	n, _ := unix.Read(fd, buf)
	creates := 0
	for off := 0; off+unix.SizeofInotifyEvent <= n; {
		mask, nameLen := binary.LittleEndian.Uint32(buf[off+4:]), binary.LittleEndian.Uint32(buf[off+12:])
		if mask&unix.IN_ATTRIB != 0 {
			t.Errorf("attribute change after the socket was created (create-then-chmod window)")
		}
		if mask&unix.IN_CREATE != 0 {
			creates++
		}
		off += unix.SizeofInotifyEvent + int(nameLen)
	}
	if creates != 2 {
		t.Errorf("%d create events, want 2", creates)
	}
}
