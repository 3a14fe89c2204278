package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSelected(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		name    string
		want    bool
	}{
		{"console=ttyS0 quiet", "dm-ioctl", true},
		{"vabc.run=all", "dm-ioctl", true},
		{"quiet vabc.run=dm-ioctl,dmuser-teardown", "dmuser-teardown", true},
		{"quiet vabc.run=dm-ioctl,dmuser-teardown", "dmuser-passthrough", false},
	} {
		t.Run(tc.cmdline+"/"+tc.name, func(t *testing.T) {
			if got := selected(tc.cmdline)(tc.name); got != tc.want {
				t.Errorf("got %v", got)
			}
		})
	}
}

func TestBootNumberAndSnapParams(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		boot    int
		snapErr bool
		token   string
	}{
		{"console=ttyS0 quiet", 1, true, ""},
		{"vabc.boot=2 vabc.snap=" + strings.Repeat("ab", 32) + ":c0ffee", 2, false, "c0ffee"},
		{"vabc.boot=x vabc.snap=abc:tok", 1, true, ""},
		{"vabc.snap=" + strings.Repeat("ab", 32), 1, true, ""},
		{"vabc.snap=" + strings.Repeat("ab", 32) + ":", 1, true, ""},
	} {
		t.Run(tc.cmdline, func(t *testing.T) {
			if got := bootNumber(tc.cmdline); got != tc.boot {
				t.Errorf("bootNumber = %d, want %d", got, tc.boot)
			}
			p, err := snapParamsFrom(tc.cmdline)
			if (err != nil) != tc.snapErr {
				t.Fatalf("snapParamsFrom: %v, want error %v", err, tc.snapErr)
			}
			if err == nil && (p.token != tc.token || len(p.sha256) != 64) {
				t.Errorf("snapParamsFrom = %+v", p)
			}
		})
	}
}

func TestScenarioNames(t *testing.T) {
	want := []string{"dm-ioctl", "dmuser-passthrough", "dmuser-teardown", "snapuserd-user", "snapuserd-merge-kill"}
	seen := map[string]bool{}
	for _, s := range scenarios {
		if seen[s.name] {
			t.Errorf("duplicate scenario %q", s.name)
		}
		seen[s.name] = true
		if s.run == nil && s.missing == "" {
			t.Errorf("scenario %q has neither a run function nor a reason", s.name)
		}
	}
	for _, n := range want {
		if !seen[n] {
			t.Errorf("scenario %q not registered", n)
		}
	}
}

// TestServeChannelRaw drives the raw protocol loop over a socketpair standing in for the
// kernel side: read, write, flush and an unsupported request, then EOF ends the loop.
func TestServeChannelRaw(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	kernel := os.NewFile(uintptr(fds[0]), "kernel")
	daemon := os.NewFile(uintptr(fds[1]), "daemon")
	defer kernel.Close()

	storePath := filepath.Join(t.TempDir(), "store")
	data := bytes.Repeat([]byte{0xab}, 16<<10)
	if err := os.WriteFile(storePath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := os.OpenFile(storePath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var st daemonStats
	done := make(chan error, 1)
	go func() { done <- serveChannel(daemon, store, 0, &st); daemon.Close() }()

	send := func(h msgHeader, payload []byte) {
		b := make([]byte, msgHeaderSize)
		h.encode(b)
		if _, err := kernel.Write(append(b, payload...)); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(n int) (msgHeader, []byte) {
		b := make([]byte, msgHeaderSize+n)
		if _, err := io.ReadFull(kernel, b); err != nil {
			t.Fatal(err)
		}
		var h msgHeader
		h.decode(b)
		return h, b[msgHeaderSize:]
	}

	wr := bytes.Repeat([]byte{0x5a}, 4096)
	send(msgHeader{Seq: 1, Type: reqWrite, Sector: 8, Len: 4096}, wr)
	if h, _ := recv(0); h.Seq != 1 || h.Type != respSuccess {
		t.Fatalf("write answer %+v", h)
	}
	send(msgHeader{Seq: 2, Type: reqRead, Sector: 8, Len: 8192}, nil)
	h, got := recv(8192)
	if h.Seq != 2 || h.Type != respSuccess || !bytes.Equal(got[:4096], wr) || !bytes.Equal(got[4096:], data[:4096]) {
		t.Fatalf("read answer %+v", h)
	}
	send(msgHeader{Seq: 3, Type: reqFlush}, nil)
	if h, _ := recv(0); h.Seq != 3 || h.Type != respSuccess {
		t.Fatalf("flush answer %+v", h)
	}
	send(msgHeader{Seq: 4, Type: 9}, nil)
	if h, _ := recv(0); h.Seq != 4 || h.Type != respUnsupported {
		t.Fatalf("zone answer %+v", h)
	}
	send(msgHeader{Seq: 5, Type: reqRead, Len: 2 << 20}, nil)
	kernel.Close()
	if err := <-done; err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("oversized request: %v, want a length error", err)
	}
	if st.reads.Load() != 1 || st.writes.Load() != 1 || st.flushes.Load() != 1 || st.other.Load() != 1 {
		t.Errorf("stats r%d w%d f%d o%d", st.reads.Load(), st.writes.Load(), st.flushes.Load(), st.other.Load())
	}
}
