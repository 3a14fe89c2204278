package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"

	"errors"
	"github.com/vabc-go/vabc/cow"
	"strings"
	"testing"
	"time"

	"github.com/vabc-go/vabc/snapuserd/snapuserdtest"
)

func ctl(t *testing.T, sock string, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(t.Context(), append([]string{"-socket", sock, "-timeout", "2s", "-interval", "20ms"}, args...), &out, &errb)
	return out.String(), err
}

func TestSnapshotctl(t *testing.T) {
	srv := snapuserdtest.NewServer(t)
	tr := snapuserdtest.GenTriple(t, snapuserdtest.TripleSpec{Version: 2, Comp: 1, Blocks: 128, Seed: 3})
	f := tr.WriteFiles(t, t.TempDir())
	steps := []struct {
		args []string
		want string
		fail bool
	}{
		{[]string{"query"}, "active\n", false},
		{[]string{"init", "system", f.Cow, f.Source, f.Base}, "1024\n", false},
		{[]string{"status", "system"}, "snapshot\n", false},
		{[]string{"status", "--json", "system"}, "", false},
		{[]string{"start", "system"}, "", false},
		{[]string{"start", "system"}, "", true},
		{[]string{"verify"}, "success\n", false},
		{[]string{"merge-percent"}, "0.000000\n", false},
		{[]string{"pause"}, "", false},
		// Source and base are separate devices (libsnapshot's <part>-src
		// and the partition): the merge reads the source, writes base.
		{[]string{"merge", "system"}, "", false},
		{[]string{"merge", "nosuch"}, "", true},
		{[]string{"resume"}, "", false},
		{[]string{"wait", "system"}, "system: snapshot-merge-complete\n", false},
		{[]string{"wait", "nosuch"}, "nosuch: snapshot-merge-failed\n", true},
		{[]string{"delete", "system"}, "", false},
	}
	for i, s := range steps {
		out, err := ctl(t, srv.Socket, s.args...)
		if (err != nil) != s.fail {
			t.Fatalf("step %d %v: err %v, want failure=%v", i, s.args, err, s.fail)
		}
		if s.want != "" && out != s.want {
			t.Fatalf("step %d %v: output %q, want %q", i, s.args, out, s.want)
		}
		if strings.Contains(strings.Join(s.args, " "), "--json") {
			var v map[string]any
			if err := json.Unmarshal([]byte(out), &v); err != nil || v["status"] != "snapshot" || v["misc_name"] != "system" {
				t.Fatalf("json output %q: %v", out, err)
			}
		}
	}
	if got, err := os.ReadFile(f.Base); err != nil || !bytes.Equal(got, tr.Target) {
		t.Fatalf("after the merge base != target (err %v)", err)
	}
	if got, err := os.ReadFile(f.Source); err != nil || !bytes.Equal(got, tr.Source) {
		t.Fatalf("the merge changed the source device (err %v)", err)
	}
	for _, bad := range [][]string{{}, {"frob"}, {"status"}, {"merge"}, {"init", "a"}} {
		if _, err := ctl(t, srv.Socket, bad...); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want usage error", bad, err)
		}
	}
	// A COW whose header records a finished merge: wait returns at once.
	done := append([]byte(nil), tr.Cow...)
	r, err := cow.NewReader(bytes.NewReader(done), int64(len(done)), nil)
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint64(done[cow.OffsetNumMergeOps:], uint64(len(r.MergeOrder())))
	donePath := filepath.Join(t.TempDir(), "done.cow")
	if err := os.WriteFile(donePath, done, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"init", "product", donePath, f.Target, f.Target}, {"start", "product"}, {"merge", "product"}} {
		if _, err := ctl(t, srv.Socket, args...); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	if out, err := ctl(t, srv.Socket, "wait", "product"); err != nil || out != "product: snapshot-merge-complete\n" {
		t.Fatalf("wait on a merged partition: %q %v", out, err)
	}
	if out, err := ctl(t, srv.Socket, "--json", "merge-percent"); err != nil || !strings.Contains(out, `"merge_percent": 100`) {
		t.Fatalf("merge-percent --json: %q %v", out, err)
	}
	if _, err := ctl(t, srv.Socket, "stop"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-srv.Done:
	case <-time.After(5 * time.Second):
		t.Fatal("daemon did not stop")
	}
}
