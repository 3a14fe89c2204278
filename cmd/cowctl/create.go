package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/cow/create"
	"github.com/vabc-go/vabc/internal/cli"
	"github.com/vabc-go/vabc/internal/progress"
)

// usageError marks errors that exit with status 2 (internal/cli, shared by
// the tools).
type usageError = cli.UsageError

func usagef(format string, args ...any) error { return cli.Usagef(format, args...) }

// isToolUsage reports whether err is a usage error (exit status 2).
func isToolUsage(err error) bool { return cli.IsUsage(err) }

// newFlagSet returns a flag set whose errors and help go to stderr.
func newFlagSet(name, synopsis, help string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: cowctl %s %s\n\n%s\n\nFlags:\n", name, synopsis, help)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; --help prints the usage and reports done.
func parseFlags(fs *flag.FlagSet, args []string) (done bool, err error) {
	return cli.ParseFlags(fs, args, 0)
}

// openImage opens a partition image read-only.
// analyzed is a source/target pair opened and analysed for create/estimate.
type analyzed struct {
	plan     *create.Plan
	src, tgt create.Image
	copts    create.CowOptions
	close    func()
}

// analyzePair opens both images and runs create.Analyze with the COW flags,
// drawing a progress bar labelled label on a terminal. close releases the
// images.
func analyzePair(ctx context.Context, srcPath, tgtPath string, cf cowFlags, stderr io.Writer, label string) (*analyzed, error) {
	aopts, copts, err := cf.options()
	if err != nil {
		return nil, err
	}
	src, sf, err := openImage(srcPath)
	if err != nil {
		return nil, err
	}
	tgt, tf, err := openImage(tgtPath)
	if err != nil {
		sf.Close()
		return nil, err
	}
	closeBoth := func() { sf.Close(); tf.Close() }
	bar := progress.New(stderr, label)
	aopts.Progress = bar.Update
	plan, err := create.Analyze(ctx, src, tgt, aopts)
	bar.Finish()
	if err != nil {
		closeBoth()
		return nil, err
	}
	return &analyzed{plan: plan, src: src, tgt: tgt, copts: copts, close: closeBoth}, nil
}

func openImage(path string) (create.Image, *os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return create.Image{}, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return create.Image{}, nil, err
	}
	size := st.Size()
	if !st.Mode().IsRegular() {
		// Block devices report size 0 through Stat; ask the device.
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return create.Image{}, nil, fmt.Errorf("%s: size: %w", path, err)
		}
	}
	return create.Image{R: f, Size: size, Name: path}, f, nil
}

// parseFactor parses a compression factor: bytes, or with a K suffix
// ("64K"). It must be a power of two from 4K to 256K.
func parseFactor(s string) (uint32, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mul := uint64(1)
	switch {
	case strings.HasSuffix(t, "KIB"):
		t, mul = strings.TrimSuffix(t, "KIB"), 1024
	case strings.HasSuffix(t, "K"):
		t, mul = strings.TrimSuffix(t, "K"), 1024
	}
	v, err := strconv.ParseUint(t, 10, 32)
	if err != nil {
		return 0, usagef("bad compression factor %q (want 4K, 8K, …, 256K)", s)
	}
	v *= mul
	if v < cow.DefaultBlockSize || v > cow.MaxCompressionSize || v&(v-1) != 0 {
		return 0, usagef("compression factor %q must be a power of two from 4K to 256K", s)
	}
	return uint32(v), nil
}

// cowFlags are the COW-shape flags shared by create and estimate.
type cowFlags struct {
	version     int
	compression string
	factor      string
	xor         bool
	threads     int
	noScratch   bool
}

func (c *cowFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&c.version, "cow-version", 3, "COW format version: 2 or 3")
	fs.StringVar(&c.compression, "compression", "lz4", "compression: lz4, zstd, gz, brotli or none, optionally with a level (\"zstd,9\")")
	fs.StringVar(&c.factor, "compression-factor", "", "v3 only: largest unit compressed as one, 4K..256K (default 64K on v3, as create_snapshot)")
	fs.BoolVar(&c.xor, "xor", false, "emit Xor ops for changed blocks whose XOR against the old block compresses clearly better (no effect with --compression none)")
	fs.IntVar(&c.threads, "threads", runtime.GOMAXPROCS(0), "analysis threads (the output does not depend on it)")
	fs.BoolVar(&c.noScratch, "no-scratch", false, "omit the 2 MiB scratch region (buffer_size = 0; no crash protection for overlapping merge windows)")
}

func (c *cowFlags) options() (create.Options, create.CowOptions, error) {
	var co create.CowOptions
	if c.version != 2 && c.version != 3 {
		return create.Options{}, co, usagef("--cow-version %d: want 2 or 3", c.version)
	}
	co.Version = c.version
	if err := co.Writer.SetCompression(c.compression); err != nil {
		return create.Options{}, co, usagef("--compression %q: %v", c.compression, err)
	}
	switch {
	case c.factor != "":
		f, err := parseFactor(c.factor)
		if err != nil {
			return create.Options{}, co, err
		}
		if c.version == 2 && f != cow.DefaultBlockSize {
			return create.Options{}, co, usagef("--compression-factor %s needs --cow-version 3 (v2 compresses one block per op)", c.factor)
		}
		co.Writer.CompressionFactor = f
	case c.version == 3:
		co.Writer.CompressionFactor = 64 << 10
	}
	co.Writer.NoScratch = c.noScratch
	if c.xor && c.noScratch {
		return create.Options{}, co, usagef("--xor needs the scratch region: an Xor op reads its own destination block, " +
			"so without scratch an interrupted merge would replay it over already merged data")
	}
	if c.threads < 1 {
		return create.Options{}, co, usagef("--threads %d: want at least 1", c.threads)
	}
	// Without compression an Xor payload is as large as the block itself:
	// Xor ops would only add merge-order constraints.
	xor := c.xor && co.Writer.Compression != cow.CompressionNone
	return create.Options{Xor: xor, Threads: c.threads}, co, nil
}

// summary is the --json object of create and estimate.
type summary struct {
	COW               string            `json:"cow,omitempty"`
	Version           int               `json:"cow_version"`
	Compression       string            `json:"compression"`
	CompressionFactor uint32            `json:"compression_factor"`
	Ops               map[string]uint64 `json:"ops"`
	Blocks            create.Stats      `json:"blocks"`
	CowSize           int64             `json:"cow_size"`
	SourceSize        int64             `json:"source_size"`
	TargetSize        int64             `json:"target_size"`
	Ratio             float64           `json:"ratio"`
	Seconds           float64           `json:"seconds"`
	MBPerSec          float64           `json:"mb_per_s"`
}

func newSummary(path string, res *create.Result, co create.CowOptions, elapsed time.Duration) summary {
	factor := co.Writer.CompressionFactor
	if factor == 0 {
		factor = cow.DefaultBlockSize
	}
	s := summary{
		COW: path, Version: co.Version, Compression: co.Writer.Compression.String(), CompressionFactor: factor,
		Ops: res.OpCounts, Blocks: res.Plan.Stats, CowSize: res.Size,
		SourceSize: res.Plan.SourceSize, TargetSize: res.Plan.TargetSize, Seconds: elapsed.Seconds(),
	}
	if s.TargetSize > 0 {
		s.Ratio = float64(s.CowSize) / float64(s.TargetSize)
	}
	if sec := elapsed.Seconds(); sec > 0 {
		s.MBPerSec = float64(s.TargetSize) / 1e6 / sec
	}
	return s
}

func (s summary) opsLine() string {
	var parts []string
	for _, k := range create.Sorted(s.Ops) {
		parts = append(parts, fmt.Sprintf("%d %s", s.Ops[k], k))
	}
	if len(parts) == 0 {
		return "no ops"
	}
	return strings.Join(parts, ", ")
}

func writeJSON(w io.Writer, v any) error { return cli.WriteJSON(w, v) }

const createHelp = `Builds a COW that turns the source partition image into the target image
(AOSP create_snapshot). Per target block: unchanged blocks need no op,
all-zero blocks become Zero ops, blocks found anywhere in the source become
Copy ops, the rest Replace data (or Xor ops with --xor). Copy/Xor ops are
ordered so that an in-place merge is safe; dependency cycles are broken by
turning one copy per cycle into a Replace op. The file is re-read and its
merge order checked (VerifyMergeOps) before it is kept. The output is the same
for any --threads.`

// runCreate implements "cowctl create".
func runCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("create", "--source OLD.img --target NEW.img -o OUT.cow [flags]", createHelp, stderr)
	var srcPath, tgtPath, out string
	var jsonOut bool
	var cf cowFlags
	fs.StringVar(&srcPath, "source", "", "old partition image (required)")
	fs.StringVar(&tgtPath, "target", "", "new partition image (required)")
	fs.StringVar(&out, "o", "", "COW file to write (required)")
	fs.BoolVar(&jsonOut, "json", false, "print the summary as one JSON object")
	cf.register(fs)
	if done, err := parseFlags(fs, args); done || err != nil {
		return err
	}
	if srcPath == "" || tgtPath == "" || out == "" {
		return usagef("--source, --target and -o are required")
	}
	start := time.Now()
	pr, err := analyzePair(ctx, srcPath, tgtPath, cf, stderr, "analyse")
	if err != nil {
		return err
	}
	defer pr.close()
	plan, src, tgt, copts := pr.plan, pr.src, pr.tgt, pr.copts
	bar := progress.New(stderr, "write  ")
	res, err := create.Write(ctx, plan, src, tgt, out, copts, bar.Update)
	bar.Finish()
	if err != nil {
		return err
	}
	s := newSummary(out, res, copts, time.Since(start))
	if jsonOut {
		return writeJSON(stdout, s)
	}
	fmt.Fprintf(stdout, "%s: v%d %s (factor %dK): %s; %d cycles broken; COW %d bytes = %.1f%% of target %d bytes; %.1f MB/s\n",
		out, s.Version, s.Compression, s.CompressionFactor/1024, s.opsLine(), s.Blocks.CyclesBroken,
		s.CowSize, s.Ratio*100, s.TargetSize, s.MBPerSec)
	return nil
}
