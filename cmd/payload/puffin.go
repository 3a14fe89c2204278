package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/vabc-go/vabc/internal/cli"
	"github.com/vabc-go/vabc/update_engine/puffin"
)

// maxPuffFile bounds the files puffpatch and puffdiff hold in memory.
const maxPuffFile = 1 << 30

func readBounded(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > maxPuffFile {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d this command holds in memory", path, st.Size(), maxPuffFile)
	}
	return os.ReadFile(path)
}

// runPuffpatch is AOSP puffin's "puffpatch" operation: apply a PUF1 patch.
func runPuffpatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("puffpatch", "puffpatch --src FILE --patch FILE -o OUT", stderr)
	src := fs.String("src", "", "source file (required)")
	patchPath := fs.String("patch", "", "puffin patch (PUF1) (required)")
	out := fs.String("o", "", "output file (required)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *src == "" || *patchPath == "" || *out == "" {
		fs.Usage()
		return &cli.UsageError{Msg: "puffpatch needs --src, --patch and -o"}
	}
	s, err := readBounded(*src)
	if err != nil {
		return err
	}
	p, err := readBounded(*patchPath)
	if err != nil {
		return err
	}
	res, err := puffin.Apply(s, p, -1, maxPuffFile)
	if err != nil {
		return fmt.Errorf("%s: %w", *patchPath, err)
	}
	if err := writeFileAtomic(*out, res); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d bytes\n", *out, len(res))
	return nil
}

// runPuffdiff is AOSP puffin's "puffdiff" operation: locate the deflate
// streams (zip entries, gzip members) of both files and diff their puffed
// views with bsdiff.
func runPuffdiff(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("puffdiff", "puffdiff --src FILE --dst FILE -o PATCH", stderr)
	src := fs.String("src", "", "source file (required)")
	dst := fs.String("dst", "", "destination file (required)")
	out := fs.String("o", "", "output patch (required)")
	quality := fs.Int("brotli-quality", 9, "brotli quality of the inner BSDF2 streams (AOSP uses 11)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *src == "" || *dst == "" || *out == "" {
		fs.Usage()
		return &cli.UsageError{Msg: "puffdiff needs --src, --dst and -o"}
	}
	s, err := readBounded(*src)
	if err != nil {
		return err
	}
	d, err := readBounded(*dst)
	if err != nil {
		return err
	}
	sd, dd := puffin.Locate(s, 1), puffin.Locate(d, 1)
	patch, err := puffin.Diff(s, d, sd, dd, puffin.DiffOptions{BrotliQuality: *quality})
	if err != nil {
		return err
	}
	if err := writeFileAtomic(*out, patch); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d bytes (%d source and %d destination deflate blocks)\n", *out, len(patch), len(sd), len(dd))
	return nil
}
