package snapuserd

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/snapuserd/proto"
)

// openAsPeer opens the COW and base device read-write and the source device
// read-only with the file-system credentials of a non-root client (its uid,
// gid and supplementary groups; the trust model is in proto/peer.go), so
// that the kernel decides whether that client could access them. It
// returns the open files and req with each path replaced by the
// /proc/self/fd link of its file, so that the snapshot and the merge open
// exactly these inodes and a path swapped after the check cannot be
// substituted. The caller closes the files when the handler goes away.
func openAsPeer(p *proto.Peer, req proto.InitRequest) ([]*os.File, proto.InitRequest, error) {
	type result struct {
		files []*os.File
		err   error
	}
	done := make(chan result, 1)
	go func() {
		// The thread's credentials are changed and never restored: it
		// stays locked, so it exits with this goroutine instead of going
		// back to Go's thread pool.
		runtime.LockOSThread()
		var r result
		r.files, r.err = openWithCreds(p, []peerPath{
			{req.Cow, os.O_RDWR, "COW"}, {req.Backing, os.O_RDONLY, "source device"}, {req.BasePath, os.O_RDWR, "base device"},
		})
		done <- r
	}()
	r := <-done
	if r.err != nil {
		return nil, req, fmt.Errorf("snapuserd: init for %v: %w", p, r.err)
	}
	pinned := req
	pinned.Cow = procFD(r.files[0])
	pinned.Backing = procFD(r.files[1])
	pinned.BasePath = procFD(r.files[2])
	return r.files, pinned, nil
}

type peerPath struct {
	path string
	flag int
	what string
}

// openWithCreds switches the calling (locked) thread to p's file-system
// credentials and opens paths. setfsuid to a non-zero uid also drops the
// file capabilities (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, …)
// of the thread, so the opens are checked exactly as the peer's own.
func openWithCreds(p *proto.Peer, paths []peerPath) ([]*os.File, error) {
	groups := make([]int, len(p.Groups))
	for i, g := range p.Groups {
		groups[i] = int(g)
	}
	if err := unix.Setgroups(groups); err != nil {
		return nil, fmt.Errorf("setgroups: %w", err)
	}
	unix.Setfsgid(int(p.GID))
	unix.Setfsuid(int(p.UID))
	// setfsuid/setfsgid report no errors; read the values back.
	if u, _ := unix.SetfsuidRetUid(-1); u != int(p.UID) {
		return nil, fmt.Errorf("setfsuid(%d) left fsuid %d", p.UID, u)
	}
	if g, _ := unix.SetfsgidRetGid(-1); g != int(p.GID) {
		return nil, fmt.Errorf("setfsgid(%d) left fsgid %d", p.GID, g)
	}
	var files []*os.File
	for _, pp := range paths {
		if pp.path == "" {
			err := fmt.Errorf("empty %s path", pp.what)
			for _, f := range files {
				f.Close()
			}
			return nil, err
		}
		f, err := os.OpenFile(pp.path, pp.flag|unix.O_CLOEXEC, 0)
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, fmt.Errorf("%s: %w", pp.what, err)
		}
		files = append(files, f)
	}
	return files, nil
}

// procFD names f's open file description for a re-open of the same inode.
func procFD(f *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", f.Fd()) }

func closeAll(files []*os.File) error {
	var errs []error
	for _, f := range files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}
