package snapuserd

import (
	"context"

	"github.com/vabc-go/vabc/kernel/fuse"
)

// Fuse is the FUSE frontend (-fuse_mount DIR): it stands in for the dm-user
// control node. init needs no /dev/dm-user/<misc>; DIR/<misc> appears when
// start succeeds and disappears on delete.
type Fuse struct {
	Export *fuse.Export
}

// Name implements Frontend.
func (f *Fuse) Name() string { return "fuse" }

// Prepare implements Frontend.
func (f *Fuse) Prepare(misc string, dev Device) (Export, error) {
	return &fuseExport{f: f, misc: misc, dev: dev}, nil
}

type fuseExport struct {
	f    *Fuse
	misc string
	dev  Device
}

// Attach adds DIR/<misc> before start replies.
func (e *fuseExport) Attach() error { return e.f.Export.Add(e.misc, e.dev, e.dev.Size()) }

func (e *fuseExport) Serve(ctx context.Context) error {
	<-ctx.Done()
	return e.f.Export.Remove(e.misc)
}

func (e *fuseExport) Close() error { return nil }
