// Command demo is `make demo`: the whole Virtual A/B OTA story on one host,
// driven through the real binaries (cmd/payload, cmd/snapuserd,
// cmd/snapshotctl) the way a build server and a device use them:
//
//  1. generate an old and a new ext4 system image (testdata/imagegen;
//     mixed raw images when mkfs.ext4 is missing);
//  2. build a signed incremental VABC payload (payload generate);
//  3. verify its signature and hashes (payload verify);
//  4. write the COW a device writes while installing (payload apply-cow);
//  5. serve the snapshot (base + COW) through snapuserd: a FUSE export
//     when /dev/fuse works, else snapuserd's in-process dm-user emulation;
//     the served bytes must equal the new image;
//  6. merge the COW into the base image, SIGKILL the daemon in the middle,
//     show the merge state left on disk, restart and finish the merge;
//  7. check base == new image and print a report (sizes, ratios, timings).
//
// Nothing needs root: without root the FUSE export goes through
// fusermount3, and without FUSE the emulation stands in.
//
//	go run ./demo [-bin DIR] [-work DIR] [-keep] [-frontend auto|fuse|emulated] [-files N]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/vabc-go/vabc/internal/cli"
)

func main() { cli.Main("demo", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.bin, "bin", "bin", "directory with the built payload, snapuserd and snapshotctl binaries (make build)")
	fs.StringVar(&o.work, "work", "", "work directory (default: a new temporary directory, removed at the end)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory")
	fs.StringVar(&o.frontend, "frontend", "auto", "how snapuserd serves the snapshot: fuse, emulated (in-process dm-user) or auto (FUSE when it works)")
	fs.IntVar(&o.files, "files", 160, "files in the generated ext4 tree (image size scales with it)")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the generated images")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: demo [flags]\n\n"+
			"Runs the whole OTA story: images → signed payload → verify → COW → snapuserd → merge with a SIGKILL → verified.\n\n"+
			"examples:\n  go run ./demo -bin bin\n  go run ./demo -bin bin -frontend emulated -files 40 -keep -work /tmp/demo\n\nflags:\n")
		fs.PrintDefaults()
	}
	if done, err := cli.ParseFlags(fs, args, 0); done || err != nil {
		return err
	}
	switch o.frontend {
	case "auto", "fuse", "emulated":
	default:
		return cli.Usagef("-frontend %q: want auto, fuse or emulated", o.frontend)
	}
	if o.files < 4 {
		return cli.Usagef("-files must be ≥ 4")
	}
	d, err := newDemo(o, stdout)
	if err != nil {
		return err
	}
	defer d.cleanup()
	return d.run(ctx)
}
