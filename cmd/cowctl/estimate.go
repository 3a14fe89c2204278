package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/vabc-go/vabc/cow/create"
	"github.com/vabc-go/vabc/internal/progress"
)

const estimateHelp = `Predicts the size and op counts of the COW "cowctl create" would write for
the same images and flags, without writing a file (the data is compressed,
so the size is exact).`

// runEstimate implements "cowctl estimate".
func runEstimate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("estimate", "--source OLD.img --target NEW.img [flags]", estimateHelp, stderr)
	var srcPath, tgtPath string
	var jsonOut bool
	var cf cowFlags
	fs.StringVar(&srcPath, "source", "", "old partition image (required)")
	fs.StringVar(&tgtPath, "target", "", "new partition image (required)")
	fs.BoolVar(&jsonOut, "json", false, "print the estimate as one JSON object")
	cf.register(fs)
	if done, err := parseFlags(fs, args); done || err != nil {
		return err
	}
	if srcPath == "" || tgtPath == "" {
		return usagef("--source and --target are required")
	}
	start := time.Now()
	pr, err := analyzePair(ctx, srcPath, tgtPath, cf, stderr, "analyse ")
	if err != nil {
		return err
	}
	defer pr.close()
	plan, src, tgt, copts := pr.plan, pr.src, pr.tgt, pr.copts
	bar := progress.New(stderr, "estimate")
	res, err := create.Estimate(ctx, plan, src, tgt, copts, bar.Update)
	bar.Finish()
	if err != nil {
		return err
	}
	s := newSummary("", res, copts, time.Since(start))
	if jsonOut {
		return writeJSON(stdout, s)
	}
	fmt.Fprintf(stdout, "estimate: v%d %s (factor %dK): %s; %d cycles broken; COW %d bytes = %.1f%% of target %d bytes\n",
		s.Version, s.Compression, s.CompressionFactor/1024, s.opsLine(), s.Blocks.CyclesBroken, s.CowSize, s.Ratio*100, s.TargetSize)
	return nil
}
