package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/vabc-go/vabc/internal/cli"
	"github.com/vabc-go/vabc/internal/progress"
	"github.com/vabc-go/vabc/update_engine/vabc"
)

// runApplyCOW is `payload apply-cow`: one VABC COW file per partition,
// written as update_engine's VABC writer does (update_engine/vabc).
func runApplyCOW(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("apply-cow", "apply-cow [--old DIR] -o DIR [--cow-version 2|3] [--compression ALG[,LEVEL]] [--compression-factor N] [--no-xor] [-p a,b] [--threads N] [--json] PAYLOAD", stderr)
	out := fs.String("o", "", "output directory for <partition>.cow (required)")
	old := fs.String("old", "", "directory with the source <partition>.img files (delta payloads)")
	version := fs.Uint("cow-version", 0, "COW format version 2 or 3 (default: the manifest's cow_version, else 2)")
	comp := fs.String("compression", "", "COW compression none|gz|brotli|lz4|zstd[,LEVEL] (default: the manifest's vabc_compression_param, else none)")
	factor := fs.String("compression-factor", "", "v3 compression factor, e.g. 64K (default: the manifest's compression_factor, else 4K)")
	noXor := fs.Bool("no-xor", false, "ignore COW_XOR merge operations (device without XOR support)")
	noVerify := fs.Bool("no-verify", false, "skip hashing old image + COW against new_partition_info.hash")
	parts := fs.String("p", "", "comma-separated partitions (default all)")
	threads := fs.Int("threads", 0, "operations computed at once (default: number of CPUs)")
	asJSON := fs.Bool("json", false, "print one JSON object (format subject to change)")
	trust := addTrustFlags(fs)
	var snap snapshotState
	fs.StringVar(&snap.dir, "snapshot-state", "", "on-device install: libsnapshot metadata dir (e.g. /metadata/ota) to record the COWs as snapshots of --target-slot in")
	fs.StringVar(&snap.target, "target-slot", "_b", "with --snapshot-state: slot suffix being updated")
	fs.StringVar(&snap.source, "source-slot", "", "with --snapshot-state: running slot suffix (default: the other slot)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: payload apply-cow [--old DIR] -o DIR [flags] PAYLOAD

Writes DIR/<partition>.cow for each partition the way update_engine's VABC
writer does: merge sequence and Copy ops from merge_operations, Label(0), the
ops of each install operation followed by a label, the end-of-install label.
Settings come from the manifest's dynamic_partition_metadata unless
overridden. Each finished COW is checked: the old image seen through the COW
(as snapuserd serves it) must hash to new_partition_info.hash and the merge
order must be safe; a COW that fails is removed. An interrupted run resumes
from the last label when rerun with the same payload and settings
(DIR/<partition>.cow.state tracks it; finished partitions are skipped).
--old is needed for delta payloads.

flags:
`)
		fs.PrintDefaults()
	}
	path, err := onePayload(fs, args)
	if err != nil {
		return err
	}
	if *out == "" {
		fs.Usage()
		return &cli.UsageError{Msg: "apply-cow: -o DIR is required"}
	}
	opts := vabc.Options{OutDir: *out, OldDir: *old, CowVersion: uint32(*version), Compression: *comp, DisableXOR: *noXor, SkipVerify: *noVerify, Threads: *threads}
	if *version != 0 && *version != 2 && *version != 3 {
		return &cli.UsageError{Msg: fmt.Sprintf("apply-cow: --cow-version %d: want 2 or 3", *version)}
	}
	if *factor != "" {
		f, err := parseSize(*factor)
		if err != nil || f <= 0 {
			return &cli.UsageError{Msg: fmt.Sprintf("apply-cow: --compression-factor %q: want a size such as 64K", *factor)}
		}
		opts.CompressionFactor = uint64(f)
	}
	if *parts != "" {
		opts.Partitions = strings.Split(*parts, ",")
	}
	if snap.dir != "" {
		if err := snap.check(); err != nil {
			return err
		}
		snap.old = *old
	}
	if opts.Limits, err = trust.limits("apply-cow"); err != nil {
		return err
	}
	p, err := trust.open(ctx, "apply-cow", path, stderr)
	if err != nil {
		return err
	}
	defer p.Close()
	if snap.dir != "" {
		if err := snap.begin(); err != nil {
			return err
		}
	}
	bar := progress.New(stderr, "")
	if bar != nil {
		opts.Progress = bar.Update
	}
	start := time.Now()
	res, err := vabc.Write(ctx, p, opts)
	bar.Finish()
	if err != nil {
		return err
	}
	if snap.dir != "" {
		if err := snap.finish(p, res, *out); err != nil {
			return err
		}
	}
	if *asJSON {
		return writeJSON(stdout, map[string]any{"partitions": res, "seconds": time.Since(start).Seconds()})
	}
	for _, r := range res {
		fmt.Fprintln(stdout, r)
	}
	return nil
}
