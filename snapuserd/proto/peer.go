package proto

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Trust model of the control socket.
//
// Root peers (and the -no_socket argv of init) are trusted as in AOSP: the
// paths of an init message are opened by the daemon, which runs as root, so
// a root client may name any file or device. Only root and the uids in
// Options.AllowUIDs may connect (SO_PEERCRED); the socket is created with
// mode 0660. For an allowed non-root peer the Server passes its credentials
// along (InitRequest.Peer); the daemon then opens the COW, source and base
// paths with that peer's uid, gid and supplementary groups as file-system
// credentials, so the kernel's own access check (directories, modes, ACLs)
// decides, and uses exactly the files so opened: a non-root client can make
// the daemon read or write only what it could read or write itself. Misc
// names must be plain names (CheckMiscName), since they are joined to the
// dm-user directory (/dev/dm-user/<misc>) and the FUSE mount.

// MaxMiscNameLen bounds a misc name: a device-mapper name is at most 127
// bytes (DM_NAME_LEN 128 with its NUL), and dm-user's misc name is one.
const MaxMiscNameLen = 127

// CheckMiscName refuses misc names that are not a plain file name: empty,
// longer than MaxMiscNameLen, "." or "..", or containing '/', ',' (the
// protocol's separator), NUL or another control character.
func CheckMiscName(name string) error {
	bad := func(why string) error { return fmt.Errorf("snapuserd: misc name %q: %s", printable(name), why) }
	switch {
	case name == "":
		return errors.New("snapuserd: empty misc name")
	case len(name) > MaxMiscNameLen:
		return bad(fmt.Sprintf("longer than %d bytes", MaxMiscNameLen))
	case name == "." || name == "..":
		return bad("not a plain name")
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '/':
			return bad("contains '/'")
		case c == ',':
			return bad("contains ','")
		case c < 0x20 || c == 0x7f:
			return bad(fmt.Sprintf("contains control character %#x", c))
		}
	}
	return nil
}

// Peer identifies a non-root control client (from SO_PEERCRED and its
// /proc/<pid>/status).
type Peer struct {
	PID      int32
	UID, GID uint32
	Groups   []uint32 // supplementary groups
}

func (p *Peer) String() string { return fmt.Sprintf("pid %d uid %d gid %d", p.PID, p.UID, p.GID) }

// connCred returns SO_PEERCRED of a Unix connection (nil, nil for other
// connections, which carry no credentials).
func connCred(c net.Conn) (*unix.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, nil
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return cred, nil
}

// peerOf builds the Peer of a non-root client; its supplementary groups come
// from /proc/<pid>/status (refused if unreadable: without them the access
// check could not be the peer's).
func peerOf(cred *unix.Ucred) (*Peer, error) {
	p := &Peer{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cred.Pid))
	if err != nil {
		return nil, fmt.Errorf("groups of %v: %w", p, err)
	}
	if p.Groups, err = parseGroups(st); err != nil {
		return nil, fmt.Errorf("groups of %v: %w", p, err)
	}
	return p, nil
}

// parseGroups reads the Groups: line of a /proc/<pid>/status file.
func parseGroups(status []byte) ([]uint32, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Groups:")
		if !ok {
			continue
		}
		var gs []uint32
		for _, f := range strings.Fields(rest) {
			g, err := strconv.ParseUint(f, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("bad group %q", f)
			}
			gs = append(gs, uint32(g))
		}
		return gs, nil
	}
	return nil, errors.New("no Groups: line")
}

// umaskMu serialises the umask changes of socket creation.
var umaskMu sync.Mutex

// listenUnixMode creates a listening Unix socket of the given network
// ("unix" or "unixpacket") at path whose file has mode 0660 from the moment
// it exists: bind runs under umask 0117 (0777 &^ 0117 = 0660), so there is no
// window in which the socket is reachable with a wider mode, as there is with
// create-then-chmod. The umask is process-wide; files created by other
// goroutines during bind get at most the same restrictions.
func listenUnixMode(network, path string) (*net.UnixListener, error) {
	umaskMu.Lock()
	old := unix.Umask(0o117)
	ln, err := net.ListenUnix(network, &net.UnixAddr{Name: path, Net: network})
	unix.Umask(old)
	umaskMu.Unlock()
	return ln, err
}
