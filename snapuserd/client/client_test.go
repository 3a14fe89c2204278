package client_test

import (
	"bytes"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vabc-go/vabc/snapuserd/client"
	"github.com/vabc-go/vabc/snapuserd/proto"
	"github.com/vabc-go/vabc/snapuserd/snapuserdtest"
)

func TestClientAgainstDaemon(t *testing.T) {
	srv := snapuserdtest.NewServer(t)
	tr := snapuserdtest.GenTriple(t, snapuserdtest.TripleSpec{Version: 3, Comp: 3, Factor: 64 << 10, Blocks: 256, Seed: 5})
	f := tr.WriteFiles(t, t.TempDir())
	c, err := client.Connect(t.Context(), srv.Socket, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n, err := c.InitDmUserCow("system", f.Cow, f.Source, f.Base)
	if err != nil || n != uint64(len(tr.Target)/512) {
		t.Fatalf("init: %d %v", n, err)
	}
	if _, err := c.InitDmUserCow("system", f.Cow, f.Source, f.Base); err == nil {
		t.Error("second init of the same name succeeded")
	}
	if st, err := c.QuerySnapshotStatus("system"); err != nil || st != proto.StatusSnapshot {
		t.Errorf("status %q %v", st, err)
	}
	if err := c.AttachDmUser("system"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(tr.Target))
	if _, err := srv.Frontend.Target("system").ReadAt(got, 0); err != nil || !bytes.Equal(got, tr.Target) {
		t.Fatalf("device read: %v equal=%v", err, bytes.Equal(got, tr.Target))
	}
	ok, err := c.SupportsSecondStageSocketHandoff()
	if err != nil || !ok {
		t.Errorf("handoff probe %v %v", ok, err)
	}
	if ok, err := c.QueryUpdateVerification(); err != nil || !ok {
		t.Errorf("update-verify %v %v", ok, err)
	}
	if err := c.InitiateMerge("system"); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.QuerySnapshotStatus("system"); st != proto.StatusMerge {
		t.Errorf("status after initiate_merge %q", st)
	}
	if p, err := c.GetMergePercent(); err != nil || p != 0 {
		t.Errorf("merge percent %v %v", p, err)
	}
	if err := c.PauseMerge(); err != nil {
		t.Error(err)
	}
	if err := c.ResumeMerge(); err != nil {
		t.Error(err)
	}
	if err := c.WaitForDeviceDelete("system"); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.QuerySnapshotStatus("system"); st != proto.StatusMergeFailed {
		t.Errorf("status of deleted handler %q", st)
	}
	if err := c.AttachDmUser("nope"); err == nil || !strings.Contains(err.Error(), `"fail"`) {
		t.Errorf("start of unknown handler: %v", err)
	}
	if err := c.Send(strings.Repeat("x", 600)); err == nil {
		t.Error("oversized message accepted")
	}
	if err := c.StopSnapuserd(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-srv.Done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("daemon did not stop")
	}
}

func TestConnectRetry(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s")
	// Nothing listening: Connect retries until the timeout, TryConnect
	// gives up at once on ENOENT.
	start := time.Now()
	if _, err := client.Connect(t.Context(), sock, 300*time.Millisecond); err == nil {
		t.Fatal("connect without daemon succeeded")
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("Connect gave up after %v", d)
	}
	start = time.Now()
	if _, err := client.TryConnect(t.Context(), sock, time.Second); err == nil || time.Since(start) > 200*time.Millisecond {
		t.Errorf("TryConnect: %v after %v", err, time.Since(start))
	}
	// A daemon that answers "passive" is refused.
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 512)
		c.Read(buf)
		c.Write([]byte("passive"))
		c.Close()
	}()
	if _, err := client.Connect(t.Context(), sock, time.Second); !errors.Is(err, client.ErrNotActive) {
		t.Errorf("passive daemon: %v", err)
	}
}
