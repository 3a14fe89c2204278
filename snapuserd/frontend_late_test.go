package snapuserd

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vabc-go/vabc/kernel/dmuser"
)

// lateDev is a Device whose control node exists only after init (legacy
// mode's order: init, then the dm-user device, then start).
type lateDev struct{}

func (lateDev) ReadSectors(p []byte, sector uint64) error  { clear(p); return nil }
func (lateDev) WriteSectors(p []byte, sector uint64) error { return dmuser.ErrReadOnly }
func (lateDev) Flush() error                               { return nil }
func (lateDev) Discard(sector, length uint64) error        { return dmuser.ErrUnsupported }
func (lateDev) Size() int64                                { return 4096 }
func (lateDev) Close() error                               { return nil }
func (lateDev) OpenAtStart() bool                          { return true }

// TestDmUserOpensAtStart: for an OpensAtStart device Prepare (init) does
// not need the control node; Attach (start) opens it and fails clearly
// while it is missing.
func TestDmUserOpensAtStart(t *testing.T) {
	dir := t.TempDir()
	f := &DmUser{Dir: dir, Workers: 2}
	exp, err := f.Prepare("system_b-user-cow", lateDev{})
	if err != nil {
		t.Fatalf("Prepare without a control node: %v", err)
	}
	a, ok := exp.(Attacher)
	if !ok {
		t.Fatal("the export of an OpensAtStart device is not an Attacher")
	}
	if err := a.Attach(); err == nil {
		t.Fatal("Attach without a control node succeeded")
	}
	if err := os.WriteFile(filepath.Join(dir, "system_b-user-cow"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.Attach(); err != nil {
		t.Fatalf("Attach with the control node: %v", err)
	}
	if err := exp.Close(); err != nil {
		t.Fatal(err)
	}
	// A userspace snapshot still opens the node at init.
	if _, err := f.Prepare("missing", struct{ Device }{lateDev{}}); err == nil {
		t.Fatal("Prepare of a plain device without a control node succeeded")
	}
}
