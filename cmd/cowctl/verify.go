package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/cow/create"
	"github.com/vabc-go/vabc/internal/progress"
)

const verifyHelp = `Reconstructs the snapshot the COW describes over the source image, block by
block and without merging, and compares it with the target image. Exits 0
with OK, or 1 naming the first block that differs. The COW's merge order is
checked too (VerifyMergeOps). On a partially merged COW (an interrupted
"apply --in-place" or snapuserd merge), pass the partially merged image as
--source: merged ops are read from it, and a window persisted in the scratch
region but not committed is read from the scratch copy, as snapuserd does.`

// verifyResult is the --json object of verify.
type verifyResult struct {
	OK           bool             `json:"ok"`
	COW          string           `json:"cow"`
	Blocks       uint64           `json:"blocks"`
	MergeOrderOK bool             `json:"merge_order_ok"`
	Mismatch     *create.Mismatch `json:"first_mismatch,omitempty"`
	Error        string           `json:"error,omitempty"`
}

// runVerify implements "cowctl verify".
func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify", "--source OLD.img --cow X.cow --target NEW.img [--json]", verifyHelp, stderr)
	var srcPath, cowPath, tgtPath string
	var jsonOut bool
	var threads int
	fs.StringVar(&srcPath, "source", "", "base (old) partition image (required)")
	fs.StringVar(&cowPath, "cow", "", "COW file (required)")
	fs.StringVar(&tgtPath, "target", "", "expected new partition image (required)")
	fs.BoolVar(&jsonOut, "json", false, "print the result as one JSON object")
	fs.IntVar(&threads, "threads", runtime.GOMAXPROCS(0), "threads")
	if done, err := parseFlags(fs, args); done || err != nil {
		return err
	}
	if srcPath == "" || cowPath == "" || tgtPath == "" {
		return usagef("--source, --cow and --target are required")
	}
	res := verifyResult{COW: cowPath}
	fail := func(err error) error {
		if jsonOut {
			res.Error = err.Error()
			writeJSON(stdout, res)
		}
		return err
	}
	src, sf, err := openImage(srcPath)
	if err != nil {
		return err
	}
	defer sf.Close()
	tgt, tf, err := openImage(tgtPath)
	if err != nil {
		return err
	}
	defer tf.Close()
	cf, err := os.Open(cowPath)
	if err != nil {
		return err
	}
	defer cf.Close()
	st, err := cf.Stat()
	if err != nil {
		return err
	}
	r, err := cow.NewReader(cf, st.Size(), &cow.ReaderOptions{Path: cowPath})
	if err != nil {
		return fail(err)
	}
	if err := r.VerifyMergeOps(); err != nil {
		return fail(fmt.Errorf("verify: unsafe merge order: %w", err))
	}
	res.MergeOrderOK = true
	v, err := create.NewView(r, cf, src)
	if err != nil {
		return fail(err)
	}
	bar := progress.New(stderr, "verify")
	m, err := v.Verify(ctx, tgt, threads, bar.Update)
	bar.Finish()
	if err != nil {
		return fail(err)
	}
	res.Blocks = (uint64(tgt.Size) + uint64(r.Header().BlockSize) - 1) / uint64(r.Header().BlockSize)
	if m != nil {
		res.Mismatch = m
		return fail(fmt.Errorf("verify: %s: first mismatch at %w", cowPath, m))
	}
	res.OK = true
	if jsonOut {
		return writeJSON(stdout, res)
	}
	fmt.Fprintf(stdout, "OK: %s over %s reproduces %s (%d blocks)\n", cowPath, srcPath, tgtPath, res.Blocks)
	return nil
}
