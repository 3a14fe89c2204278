package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
	"github.com/vabc-go/vabc/internal/progress"
	"github.com/vabc-go/vabc/snapuserd/merge"
)

const applyHelp = `Merges a COW into a partition image offline, with snapuserd's merge engine:
the exact AOSP merge order, num_merge_ops honoured (a partially merged COW
resumes where it stopped) and the same crash-safe on-disk merge state (scratch
windows, header commits) as the daemon.

  --in-place  merges into the source image itself and updates the COW's merge
              state as it goes; an interrupted run (even SIGKILL or power
              loss) is finished by running the same command again.
  -o NEW.img  copies the source image to NEW.img and merges into the copy.
              The COW file is never written: the engine's header and scratch
              writes go to an in-memory overlay of the COW's first bytes, so
              the same COW can be applied again or served by snapuserd. An
              interrupted -o run is simply started over.

The image is grown to cover every op before merging and cut to --size after
it. The COW does not record the partition size (AOSP keeps it in the snapshot
metadata), so pass --size when the partition shrank or its size is not a
multiple of the block size.`

// applyWrap, when set (tests only), wraps the COW and base files the engine
// writes, e.g. to kill the process at a chosen write.
var applyWrap func(cowF, base faultfs.File) (faultfs.File, faultfs.File)

// applyResult is the --json object of apply.
type applyResult struct {
	COW         string  `json:"cow"`
	Output      string  `json:"output"`
	InPlace     bool    `json:"in_place"`
	TotalOps    uint64  `json:"num_total_data_ops"`
	ResumedFrom uint64  `json:"resumed_from"`
	Merged      uint64  `json:"merged_ops"`
	Size        int64   `json:"size"`
	Seconds     float64 `json:"seconds"`
	MBPerSec    float64 `json:"mb_per_s"`
}

// runApply implements "cowctl apply".
func runApply(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("apply", "--source OLD.img --cow X.cow (-o NEW.img | --in-place) [--size BYTES]", applyHelp, stderr)
	var srcPath, cowPath, out string
	var inPlace, jsonOut bool
	var size int64
	var window int
	fs.StringVar(&srcPath, "source", "", "old partition image (required)")
	fs.StringVar(&cowPath, "cow", "", "COW file (required)")
	fs.StringVar(&out, "o", "", "write the merged image here (the source and the COW stay untouched)")
	fs.BoolVar(&inPlace, "in-place", false, "merge into the source image and record progress in the COW (resumable)")
	fs.Int64Var(&size, "size", -1, "final image size in bytes; -1 means the source size, grown to cover every op")
	fs.BoolVar(&jsonOut, "json", false, "print the result as one JSON object")
	fs.IntVar(&window, "window-blocks", 0, "merge window size in ops (default: the scratch capacity, 510, as AOSP; smaller values are for tests and give num_merge_ops values AOSP never writes)")
	if done, err := parseFlags(fs, args); done || err != nil {
		return err
	}
	switch {
	case srcPath == "" || cowPath == "":
		return usagef("--source and --cow are required")
	case inPlace == (out != ""):
		return usagef("give exactly one of -o NEW.img and --in-place")
	case size < -1:
		return usagef("--size %d is negative", size)
	case window < 0:
		return usagef("--window-blocks %d is negative", window)
	}
	if out != "" {
		if same, _ := sameFile(srcPath, out); same {
			return usagef("-o %s is the source image; use --in-place", out)
		}
		if same, _ := sameFile(cowPath, out); same {
			return usagef("-o %s is the COW file", out)
		}
	}
	start := time.Now()
	outCreated := false
	defer func() {
		// An interrupted or failed -o run leaves no half-merged image (but
		// never removes a file it did not create).
		if err != nil && outCreated {
			os.Remove(out)
		}
	}()
	r, err := cow.Open(cowPath, nil)
	if err != nil {
		return err
	}
	defer r.Close()
	hdr := r.Header()
	bs := int64(hdr.BlockSize)
	order := r.MergeOrder()
	var needBlocks uint64 // blocks the merge touches
	for i := range order {
		needBlocks = max(needBlocks, order[i].NewBlock+order[i].Blocks())
	}
	res := applyResult{COW: cowPath, Output: out, InPlace: inPlace, TotalOps: uint64(len(order)), ResumedFrom: r.MergeOpStart()}
	if inPlace {
		res.Output = srcPath
	}

	var cowF, base faultfs.File
	if inPlace {
		if cowF, err = faultfs.Open(cowPath); err != nil {
			return err
		}
		if base, err = faultfs.Open(srcPath); err != nil {
			cowF.Close()
			return err
		}
	} else {
		if cowF, err = openOverlay(cowPath, &hdr); err != nil {
			return err
		}
		outCreated = true
		if base, err = copyImage(ctx, srcPath, out, stderr); err != nil {
			cowF.Close()
			return err
		}
		// An interrupted -o run starts over, so the engine's per-window
		// fsyncs buy nothing here; one sync at the end makes NEW durable.
		base = lazySync{base}
	}
	defer cowF.Close()
	defer base.Close()
	baseSize, err := base.Size()
	if err != nil {
		return err
	}
	if size < 0 {
		size = max(baseSize, int64(needBlocks)*bs)
	} else if end := int64(needBlocks) * bs; end-bs >= size {
		return fmt.Errorf("apply: %s writes block %d, past --size %d", cowPath, needBlocks-1, size)
	}
	// Grow to whole blocks covering every op (idempotent on a re-run).
	work := (max(size, int64(needBlocks)*bs, baseSize) + bs - 1) / bs * bs
	if baseSize < work {
		if err := base.Truncate(work); err != nil {
			return fmt.Errorf("apply: growing %s to %d bytes: %w", base.Name(), work, err)
		}
		if err := base.Sync(); err != nil {
			return err
		}
	}
	mergeCow, mergeBase := cowF, base
	if applyWrap != nil {
		mergeCow, mergeBase = applyWrap(cowF, base)
	}
	// A complete merge is not re-validated: after a shrink the source blocks
	// of the copies are gone, and there is nothing left to do but the final
	// truncation (which a crash may have prevented).
	if res.ResumedFrom < res.TotalOps {
		bar := progress.NewCount(stderr, "merge")
		total := int64(len(order))
		e, err := merge.New(mergeCow, mergeBase, r, &merge.Options{
			WindowBlocks: window,
			OnCheckpoint: func(c merge.Checkpoint) { bar.Update(int64(c.NumMergeOps), total) },
		})
		if err != nil {
			return err
		}
		err = e.Run(ctx)
		bar.Finish()
		if err != nil {
			return fmt.Errorf("apply: %w", err)
		}
	}
	res.Merged = res.TotalOps - min(res.ResumedFrom, res.TotalOps)
	if cur, err := base.Size(); err != nil {
		return err
	} else if cur != size {
		if err := base.Truncate(size); err != nil {
			return fmt.Errorf("apply: setting %s to %d bytes: %w", base.Name(), size, err)
		}
	}
	if err := syncNow(base); err != nil {
		return err
	}
	if err := base.Close(); err != nil {
		return err
	}
	res.Size = size
	res.Seconds = time.Since(start).Seconds()
	if res.Seconds > 0 {
		res.MBPerSec = float64(size) / 1e6 / res.Seconds
	}
	if jsonOut {
		return writeJSON(stdout, res)
	}
	resumed := ""
	if res.ResumedFrom > 0 {
		resumed = fmt.Sprintf(" (resumed at op %d)", res.ResumedFrom)
	}
	fmt.Fprintf(stdout, "%s: merged %d of %d ops%s into %s, %d bytes, %.1f MB/s\n",
		cowPath, res.Merged, res.TotalOps, resumed, res.Output, size, res.MBPerSec)
	return nil
}

func sameFile(a, b string) (bool, error) {
	sa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	sb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(sa, sb), nil
}

// copyImage copies src to a new file dst and returns dst opened read-write.
func copyImage(ctx context.Context, src, dst string, stderr io.Writer) (faultfs.File, error) {
	in, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return nil, err
	}
	outF, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	bar := progress.New(stderr, "copy ")
	buf := make([]byte, 1<<20)
	var done int64
	for {
		if err := ctx.Err(); err != nil {
			outF.Close()
			return nil, err
		}
		n, rerr := in.Read(buf)
		if n > 0 {
			if _, err := outF.Write(buf[:n]); err != nil {
				outF.Close()
				return nil, err
			}
			done += int64(n)
			bar.Update(done, st.Size())
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			outF.Close()
			return nil, rerr
		}
	}
	bar.Finish()
	return faultfs.FromOS(outF), nil
}

// cowOverlay is a COW file opened read-only whose first bytes (header and
// scratch region, everything the merge engine writes) live in memory: the
// merge sees its own writes, the file on disk never changes.
type cowOverlay struct {
	f    *os.File
	size int64
	head []byte
}

func openOverlay(path string, hdr *cow.Header) (*cowOverlay, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	n := min(int64(hdr.HeaderSize)+int64(hdr.BufferSize), st.Size())
	o := &cowOverlay{f: f, size: st.Size(), head: make([]byte, n)}
	if _, err := f.ReadAt(o.head, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("apply: reading %s header and scratch: %w", path, err)
	}
	return o, nil
}

func (o *cowOverlay) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("apply: negative offset")
	}
	n := 0
	if off < int64(len(o.head)) {
		n = copy(p, o.head[off:])
	}
	if n == len(p) {
		return n, nil
	}
	m, err := o.f.ReadAt(p[n:], off+int64(n))
	return n + m, err
}

func (o *cowOverlay) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(o.head)) {
		return 0, fmt.Errorf("apply: merge wrote %d bytes at offset %#x of %s, outside the header and scratch region", len(p), off, o.f.Name())
	}
	return copy(o.head[off:], p), nil
}

func (o *cowOverlay) Sync() error          { return nil }
func (o *cowOverlay) Size() (int64, error) { return o.size, nil }
func (o *cowOverlay) Name() string         { return o.f.Name() }
func (o *cowOverlay) Close() error         { return o.f.Close() }
func (o *cowOverlay) Truncate(int64) error {
	return fmt.Errorf("apply: %s is read-only with -o", o.f.Name())
}

// lazySync turns Sync into a no-op (apply -o); syncNow reaches the real one.
type lazySync struct{ faultfs.File }

func (lazySync) Sync() error { return nil }

func syncNow(f faultfs.File) error {
	if l, ok := f.(lazySync); ok {
		return l.File.Sync()
	}
	return f.Sync()
}
