package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/vabc-go/vabc/testdata/imagegen"
	"github.com/vabc-go/vabc/update_engine/generate"
)

// payload-generate: size of an incremental payload between two ext4 images
// (mkfs.ext4 -d from two directory trees differing by a few file edits, an
// appended file, a removed and an added file) beside the full payload of the
// new image, generated in the same run, with the time each took on 2 threads.
func init() { register("payload-generate", benchPayloadGenerate) }

func benchPayloadGenerate(r *report) error {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		return fmt.Errorf("mkfs.ext4 not installed: %w", err)
	}
	scratch, err := os.MkdirTemp("", "bench-payload-gen")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	ctx := context.Background()
	old, new, err := imagegen.Ext4Pair(ctx, scratch, 1, imagegen.Ext4Options{Files: 160, MaxFile: 384 << 10, Edits: 4})
	if err != nil {
		return err
	}
	changed := 0
	for i := 0; i+4096 <= len(new); i += 4096 {
		if string(old[i:i+4096]) != string(new[i:i+4096]) {
			changed++
		}
	}
	r.printf("\n## payload-generate\n\nTwo %d MiB ext4 images (160 files, 4 edited in place, 1 appended to, 1 removed, 1 added; "+
		"%d of %d blocks differ at the same offset), 2 threads, default options (xz/bz2 REPLACE, BSDF2 bz2/brotli q9).\n\n",
		len(new)>>20, changed, len(new)/4096)
	r.printf("| payload | size | ops | time |\n|---|---:|---|---:|\n")
	run := func(name string, cfg generate.Config) (*generate.Result, error) {
		start := time.Now()
		res, err := generate.Generate(ctx, cfg)
		if err != nil {
			return nil, err
		}
		el := time.Since(start)
		var ops []string
		for t, n := range res.Stats[0].Ops {
			ops = append(ops, fmt.Sprintf("%s×%d", t, n))
		}
		sort.Strings(ops)
		r.printf("| %s | %d B (%.2f MiB) | %s | %.2f s |\n", name, len(res.Payload), float64(len(res.Payload))/(1<<20), strings.Join(ops, " "), el.Seconds())
		return res, nil
	}
	full, err := run("full", generate.Config{MinorVersion: -1, Threads: 2, Partitions: []generate.Partition{{Name: "system", New: new}}})
	if err != nil {
		return err
	}
	inc, err := run("incremental", generate.Config{MinorVersion: -1, Threads: 2, Partitions: []generate.Partition{{Name: "system", Old: old, New: new}}})
	if err != nil {
		return err
	}
	vabc, err := run("incremental + VABC (v3, XOR)", generate.Config{MinorVersion: -1, Threads: 2,
		Partitions: []generate.Partition{{Name: "system", Old: old, New: new}},
		VABC:       &generate.VABC{CowVersion: 3, Compression: "lz4", XOR: true}})
	if err != nil {
		return err
	}
	r.printf("\nIncremental / full = %.2f%%. VABC: %d merge operations, estimate_cow_size %d B for a %d B image.\n",
		100*float64(len(inc.Payload))/float64(len(full.Payload)), vabc.Stats[0].MergeOps, vabc.Stats[0].CowSize, len(new))
	if len(inc.Payload)*4 > len(full.Payload) {
		return fmt.Errorf("incremental payload (%d B) is not well under the full payload (%d B)", len(inc.Payload), len(full.Payload))
	}
	return nil
}
