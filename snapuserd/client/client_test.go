package client_test

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/cow/create"
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
	// The triple's base and source differ, which an in-place merge cannot
	// handle: initiate_merge fails and the status says so.
	if err := c.InitiateMerge("system"); err == nil || !strings.Contains(err.Error(), `"fail"`) {
		t.Errorf("initiate_merge of a COW that cannot merge in place: %v", err)
	}
	if st, _ := c.QuerySnapshotStatus("system"); st != proto.StatusMergeFailed {
		t.Errorf("status after a failed initiate_merge %q", st)
	}
	// A Virtual A/B COW (base = source) merges; paused, it stays queued.
	vendor := inPlaceCow(t, tr.Source, tr.Target)
	if _, err := c.InitDmUserCow("vendor", vendor.cow, vendor.base, vendor.base); err != nil {
		t.Fatal(err)
	}
	if err := c.AttachDmUser("vendor"); err != nil {
		t.Fatal(err)
	}
	if err := c.PauseMerge(); err != nil {
		t.Error(err)
	}
	if err := c.InitiateMerge("vendor"); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.QuerySnapshotStatus("vendor"); st != proto.StatusMerge {
		t.Errorf("status after initiate_merge %q", st)
	}
	if p, err := c.GetMergePercent(); err != nil || p != 0 {
		t.Errorf("merge percent %v %v", p, err)
	}
	if err := c.ResumeMerge(); err != nil {
		t.Error(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st, err := c.QuerySnapshotStatus("vendor")
		if err != nil || st == proto.StatusMergeComplete {
			break
		}
		if time.Now().After(deadline) || st != proto.StatusMerge {
			t.Fatalf("status during merge %q", st)
		}
	}
	if p, err := c.GetMergePercent(); err != nil || p != 50 {
		t.Errorf("merge percent with one failed and one complete merge: %v %v", p, err)
	}
	if base, err := os.ReadFile(vendor.base); err != nil || !bytes.Equal(base, tr.Target) {
		t.Errorf("base after the merge differs from the target (%v)", err)
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

type inPlace struct{ cow, base string }

// inPlaceCow writes a Virtual A/B pair: base.img = source (the merge
// writes the target into it) and a COW built with cow/create.
func inPlaceCow(t *testing.T, source, target []byte) inPlace {
	t.Helper()
	dir := t.TempDir()
	f := inPlace{cow: filepath.Join(dir, "vendor.cow"), base: filepath.Join(dir, "vendor.img")}
	if err := os.WriteFile(f.base, source, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := create.Build(t.Context(), create.Image{R: bytes.NewReader(source), Size: int64(len(source))},
		create.Image{R: bytes.NewReader(target), Size: int64(len(target))}, f.cow, create.Options{Xor: true},
		create.CowOptions{Version: 3, Writer: cow.WriterOptions{Compression: cow.CompressionLz4}}, nil); err != nil {
		t.Fatal(err)
	}
	return f
}
