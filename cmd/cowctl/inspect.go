package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"iter"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/vabc-go/vabc/cow"
)

type inspectFlags struct {
	json         bool
	showOps      bool
	order        string
	showMerged   bool
	verifyMerge  bool
	showMergeSeq bool
	decompress   bool
	extractTo    string
	silent       bool
	legacy       bool
	layout       bool
}

// parseInterleaved parses flags that may appear before or after positional
// arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" || (len(args[0]) > 0 && args[0][0] != '-') {
			if args[0] == "--" {
				return append(pos, args[1:]...), nil
			}
			pos = append(pos, args[0])
			args = args[1:]
			continue
		}
		return pos, nil
	}
}

// runInspect implements `cowctl inspect`, mirroring AOSP inspect_cow.
func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f inspectFlags
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&f.json, "json", false, "print one JSON object (header, footer, ops, counts) instead of text")
	fs.BoolVar(&f.showOps, "show-ops", false, "list every op (text output; JSON always lists ops)")
	fs.StringVar(&f.order, "order", "file", "op order: file, merge (data ops in merge order) or reverse-merge")
	fs.BoolVar(&f.showMerged, "show-merged", false, "with --order merge/reverse-merge, include ops already merged (before num_merge_ops)")
	fs.BoolVar(&f.verifyMerge, "verify-merge-sequence", false, "check the merge order (VerifyMergeOps) and report merge_order_ok")
	fs.BoolVar(&f.showMergeSeq, "show-merge-sequence", false, "print the sequence data (merge order of ordered ops)")
	fs.BoolVar(&f.decompress, "decompress", false, "read and decompress every data op; fail on corrupt data")
	fs.StringVar(&f.extractTo, "extract-to", "", "write Replace/Zero data to `FILE` at new_block*block_size (fails on Copy/Xor)")
	fs.BoolVar(&f.silent, "silent", false, "no text output (errors are still reported)")
	fs.BoolVar(&f.layout, "layout", false, "print the map of the image's regions (header, scratch, clusters or v3 regions, footer)")
	fs.BoolVar(&f.legacy, "legacy", false, "sort non-ordered ops descending like the legacy dm-snapshot daemon (AOSP inspect_cow's default reader flag)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: cowctl inspect [flags] COW\n\nParses a COW image (v1, v2 or v3) and prints its header, footer, ops and op counts.\n\nflags:")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return &usageError{Msg: err.Error()}
	}
	if len(pos) != 1 {
		fs.Usage()
		return usagef("expected exactly one COW path, got %d arguments", len(pos))
	}
	switch f.order {
	case "file", "merge", "reverse-merge":
	default:
		return usagef(`--order must be "file", "merge" or "reverse-merge", not %q`, f.order)
	}
	return inspect(ctx, pos[0], &f, stdout, stderr)
}

type jsonHeader struct {
	Magic                uint64  `json:"magic"`
	MajorVersion         uint16  `json:"major_version"`
	MinorVersion         uint16  `json:"minor_version"`
	HeaderSize           uint16  `json:"header_size"`
	FooterSize           uint16  `json:"footer_size"`
	OpSize               uint16  `json:"op_size"`
	BlockSize            uint32  `json:"block_size"`
	ClusterOps           uint32  `json:"cluster_ops"`
	NumMergeOps          uint64  `json:"num_merge_ops"`
	BufferSize           uint32  `json:"buffer_size"`
	SequenceDataCount    *uint64 `json:"sequence_data_count,omitempty"`
	ResumePointCount     *uint32 `json:"resume_point_count,omitempty"`
	ResumePointMax       *uint32 `json:"resume_point_max,omitempty"`
	OpCount              *uint64 `json:"op_count,omitempty"`
	OpCountMax           *uint64 `json:"op_count_max,omitempty"`
	CompressionAlgorithm *string `json:"compression_algorithm,omitempty"`
	MaxCompressionSize   *uint32 `json:"max_compression_size,omitempty"`
}

type jsonFooter struct {
	NumOps  uint64 `json:"num_ops"`
	OpsSize uint64 `json:"ops_size"`
}

type jsonOp struct {
	Type        string `json:"type"`
	NewBlock    uint64 `json:"new_block"`
	Source      uint64 `json:"source"`
	Compression string `json:"compression"`
	DataLength  uint32 `json:"data_length"`
}

// jsonReport is the --json report. It is written in three parts so that
// the op list is streamed, never held in memory: the head fields, "ops"
// (one element per listed op, encoded as it is visited) and the tail.
type jsonReport struct {
	Path                 string      `json:"path"`
	Header               jsonHeader  `json:"header"`
	Footer               *jsonFooter `json:"footer"`
	Compression          string      `json:"compression"`
	LastLabel            *uint64     `json:"last_label"`
	MergeOpStart         uint64      `json:"merge_op_start"`
	NumTotalDataOps      int         `json:"num_total_data_ops"`
	NumOrderedOpsToMerge uint64      `json:"num_ordered_ops_to_merge"`
	Order                string      `json:"order"`
	// "ops" is streamed here.
	jsonTail
}

// jsonTail are the report fields after "ops".
type jsonTail struct {
	Counts           map[string]uint64 `json:"counts"`
	SequenceData     []uint32          `json:"sequence_data,omitempty"`
	MergeOrderOK     *bool             `json:"merge_order_ok,omitempty"`
	MergeOrderErrors []string          `json:"merge_order_errors,omitempty"`
	DecompressErrors []string          `json:"decompress_errors,omitempty"`
	Layout           string            `json:"layout,omitempty"`
}

// jsonObjectFields returns the indented fields of v's JSON object without
// the braces (v must encode as a non-empty object).
func jsonObjectFields(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSpace(b)
	return bytes.TrimSpace(b[1 : len(b)-1]), nil
}

// opStream writes the "ops" array one element at a time.
type opStream struct {
	w   *bufio.Writer
	n   int
	err error
	buf []byte
}

// add appends one element, formatted as json.MarshalIndent(op, "    ", "  ")
// would (by hand: reflection cost more than the parse on 8M ops). The
// strings are op and compression names: plain ASCII.
func (o *opStream) add(op jsonOp) {
	if o.err != nil {
		return
	}
	b := o.buf[:0]
	if o.n > 0 {
		b = append(b, ',')
	}
	b = append(b, "\n    {\n      \"type\": "...)
	b = appendName(b, op.Type)
	b = append(b, ",\n      \"new_block\": "...)
	b = strconv.AppendUint(b, op.NewBlock, 10)
	b = append(b, ",\n      \"source\": "...)
	b = strconv.AppendUint(b, op.Source, 10)
	b = append(b, ",\n      \"compression\": "...)
	b = appendName(b, op.Compression)
	b = append(b, ",\n      \"data_length\": "...)
	b = strconv.AppendUint(b, uint64(op.DataLength), 10)
	b = append(b, "\n    }"...)
	o.buf = b
	if _, err := o.w.Write(b); err != nil {
		o.err = err
	}
	o.n++
}

// appendName appends s as a JSON string: op and compression names are
// plain ASCII identifiers, nothing to escape.
func appendName(b []byte, s string) []byte {
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func headerJSON(h cow.Header) jsonHeader {
	j := jsonHeader{
		Magic: h.Magic, MajorVersion: h.MajorVersion, MinorVersion: h.MinorVersion, HeaderSize: h.HeaderSize,
		FooterSize: h.FooterSize, OpSize: h.OpSize, BlockSize: h.BlockSize, ClusterOps: h.ClusterOps,
		NumMergeOps: h.NumMergeOps, BufferSize: h.BufferSize,
	}
	if h.Version().FileWideCompression() {
		alg := h.CompressionAlgorithm.String()
		j.SequenceDataCount, j.ResumePointCount, j.ResumePointMax = &h.SequenceDataCount, &h.ResumePointCount, &h.ResumePointMax
		j.OpCount, j.OpCountMax = &h.OpCount, &h.OpCountMax
		j.CompressionAlgorithm, j.MaxCompressionSize = &alg, &h.MaxCompressionSize
	}
	return j
}

var countKeys = []cow.OpType{cow.OpCopy, cow.OpReplace, cow.OpZero, cow.OpLabel, cow.OpCluster, cow.OpXor, cow.OpSequence}

// listing yields the indices into r.Ops() to show, in the requested order,
// without copying the (possibly 8M-entry) index lists.
func listing(r *cow.Reader, order string, showMerged bool) iter.Seq[int] {
	return func(yield func(int) bool) {
		if order == "file" {
			for i := range r.Ops() {
				if !yield(i) {
					return
				}
			}
			return
		}
		mi := r.MergeIndex()
		start := 0
		if !showMerged {
			start = int(min(r.MergeOpStart(), uint64(len(mi))))
		}
		if order == "merge" {
			for _, i := range mi[start:] {
				if !yield(i) {
					return
				}
			}
			return
		}
		// reverse-merge: AOSP's reverse iterator stops before the first
		// merge_op_start entries.
		for k := len(mi) - 1; k >= start; k-- {
			if !yield(mi[k]) {
				return
			}
		}
	}
}

// appendOpLine appends fmt.Sprintf("%6d @%#x %s\n", i, off, op) without
// fmt (one line per op of an 8M-op file).
func appendOpLine(b []byte, i int, off int64, op *cow.Op) []byte {
	n := len(b)
	b = strconv.AppendInt(b, int64(i), 10)
	if w := len(b) - n; w < 6 {
		b = append(b, "      "[:6-w]...)
		copy(b[n+6-w:], b[n:n+w])
		copy(b[n:], "      "[:6-w])
	}
	b = append(b, " @0x"...)
	b = strconv.AppendInt(b, off, 16)
	b = append(b, ' ')
	b = append(b, op.Type.String()...)
	b = append(b, " new_block="...)
	b = strconv.AppendUint(b, op.NewBlock, 10)
	b = append(b, " source="...)
	b = strconv.AppendUint(b, op.Source, 10)
	b = append(b, " data_length="...)
	b = strconv.AppendUint(b, uint64(op.DataLength), 10)
	b = append(b, " compression="...)
	b = append(b, op.Compression.String()...)
	b = append(b, " factor="...)
	b = strconv.AppendUint(b, 1<<op.FactorShift, 10)
	return append(b, '\n')
}

func inspect(ctx context.Context, path string, f *inspectFlags, stdout, stderr io.Writer) error {
	// One write per line would be one syscall per op with --show-ops.
	bw := bufio.NewWriterSize(stdout, 1<<16)
	defer bw.Flush()
	stdout = bw
	text := !f.json && !f.silent
	var extract *os.File
	if f.extractTo != "" {
		var err error
		extract, err = os.OpenFile(f.extractTo, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o664)
		if err != nil {
			return err
		}
		defer extract.Close()
	}

	start := time.Now()
	r, err := cow.Open(path, &cow.ReaderOptions{Legacy: f.legacy})
	if err != nil {
		return err
	}
	defer r.Close()
	parseTime := time.Since(start)

	h := r.Header()
	footer, hasFooter := r.Footer()
	if text {
		fmt.Fprintf(stdout, "Version: %d.%d\n", h.MajorVersion, h.MinorVersion)
		fmt.Fprintf(stdout, "Header size: %d\n", h.HeaderSize)
		fmt.Fprintf(stdout, "Footer size: %d\n", h.FooterSize)
		fmt.Fprintf(stdout, "Block size: %d\n", h.BlockSize)
		fmt.Fprintf(stdout, "Merge ops: %d\n", h.NumMergeOps)
		fmt.Fprintf(stdout, "Readahead buffer: %d bytes\n", h.BufferSize)
		if h.Version().FixedRegions() {
			fmt.Fprintf(stdout, "Compression: %s\n", h.CompressionAlgorithm)
			fmt.Fprintf(stdout, "Compression factor: %d\n", h.MaxCompressionSize)
			fmt.Fprintf(stdout, "Op count: %d of %d\n", h.OpCount, h.OpCountMax)
			fmt.Fprintf(stdout, "Sequence data count: %d\n", h.SequenceDataCount)
			fmt.Fprintf(stdout, "Resume points: %d (max %d)\n", h.ResumePointCount, h.ResumePointMax)
		} else if r.Compression() != cow.CompressionNone {
			fmt.Fprintf(stdout, "Compression: %s\n", r.Compression())
		}
		if hasFooter {
			fmt.Fprintf(stdout, "Footer: ops usage: %d bytes\n", footer.OpsSize)
			fmt.Fprintf(stdout, "Footer: op count: %d\n", footer.NumOps)
		} else {
			fmt.Fprintln(stdout, "Footer: none")
		}
		fmt.Fprintf(stdout, "Parse time: %.3fms\n", float64(parseTime.Microseconds())/1000)
	}

	rep := jsonReport{Path: path, Header: headerJSON(h), Compression: r.Compression().String(),
		MergeOpStart: r.MergeOpStart(), NumTotalDataOps: len(r.MergeIndex()),
		NumOrderedOpsToMerge: r.NumOrderedOpsToMerge(), Order: f.order,
		jsonTail: jsonTail{Counts: map[string]uint64{}}}
	if hasFooter {
		rep.Footer = &jsonFooter{NumOps: footer.NumOps, OpsSize: footer.OpsSize}
	}
	if l, ok := r.LastLabel(); ok {
		rep.LastLabel = &l
	}

	if f.layout {
		var b strings.Builder
		if err := r.Describe(&b); err != nil {
			return err
		}
		rep.Layout = b.String()
		if text {
			fmt.Fprintf(stdout, "\nLayout:\n%s", rep.Layout)
		}
	}

	if f.verifyMerge {
		verr := r.VerifyMergeOps()
		ok := verr == nil
		rep.MergeOrderOK = &ok
		if verr != nil {
			for _, e := range unjoin(verr) {
				rep.MergeOrderErrors = append(rep.MergeOrderErrors, e.Error())
				if !f.json {
					fmt.Fprintln(stderr, e)
				}
			}
		}
		if text {
			if ok {
				fmt.Fprintln(stdout, "\nMerge sequence is consistent.")
			} else {
				fmt.Fprintln(stdout, "\nMerge sequence is inconsistent!")
			}
		}
	}
	if f.showMergeSeq {
		rep.SequenceData = r.SequenceData()
		if text {
			seq := r.SequenceData()
			fmt.Fprintf(stdout, "\nSequence data (%d entries):\n", len(seq))
			for i, b := range seq {
				fmt.Fprintf(stdout, "%06d, ", b)
				if (i+1)%10 == 0 || i+1 == len(seq) {
					fmt.Fprintln(stdout)
				}
			}
		}
	}

	if text && f.showOps {
		fmt.Fprintln(stdout, "\nListing op stream:")
		fmt.Fprintln(stdout, "------------------")
	}
	ops := r.Ops()
	for _, t := range countKeys {
		rep.Counts[t.String()] = 0
	}
	var stream *opStream
	if f.json {
		// Head fields, then the op list as it is visited.
		head := rep
		head.jsonTail = jsonTail{}
		hb, err := json.MarshalIndent(struct {
			Path                 string      `json:"path"`
			Header               jsonHeader  `json:"header"`
			Footer               *jsonFooter `json:"footer"`
			Compression          string      `json:"compression"`
			LastLabel            *uint64     `json:"last_label"`
			MergeOpStart         uint64      `json:"merge_op_start"`
			NumTotalDataOps      int         `json:"num_total_data_ops"`
			NumOrderedOpsToMerge uint64      `json:"num_ordered_ops_to_merge"`
			Order                string      `json:"order"`
		}{head.Path, head.Header, head.Footer, head.Compression, head.LastLabel, head.MergeOpStart,
			head.NumTotalDataOps, head.NumOrderedOpsToMerge, head.Order}, "", "  ")
		if err != nil {
			return err
		}
		hb = bytes.TrimSpace(hb)
		stream = &opStream{w: bufio.NewWriterSize(stdout, 1<<16)}
		stream.w.Write(bytes.TrimSpace(hb[:len(hb)-1]))
		stream.w.WriteString(",\n  \"ops\": [")
	}
	var line []byte
	k := 0
	for i := range listing(r, f.order, f.showMerged) {
		if k++; k%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		op := &ops[i]
		if text && f.showOps {
			line = appendOpLine(line[:0], i, r.OpOffset(i), op)
			stdout.Write(line)
		}
		if stream != nil {
			stream.add(jsonOp{Type: op.Type.String(), NewBlock: op.NewBlock, Source: op.Source,
				Compression: op.Compression.String(), DataLength: op.DataLength})
		}
		rep.Counts[op.Type.String()]++
	}

	var failures []string
	if f.decompress {
		failures = decompressAll(ctx, r)
		rep.DecompressErrors = failures
		for _, m := range failures {
			fmt.Fprintln(stderr, m)
		}
	}
	if extract != nil {
		if err := extractTo(ctx, r, extract); err != nil {
			return err
		}
	}

	if stream != nil {
		tail, err := jsonObjectFields(rep.jsonTail)
		if err != nil {
			return err
		}
		if stream.n > 0 {
			stream.w.WriteString("\n  ")
		}
		stream.w.WriteString("],\n  ")
		stream.w.Write(tail)
		stream.w.WriteString("\n}\n")
		if stream.err == nil {
			stream.err = stream.w.Flush()
		}
		if stream.err != nil {
			return stream.err
		}
	} else if text {
		c := rep.Counts
		fmt.Fprintf(stdout, "Data ops: %d\n", c["replace"]+c["zero"]+c["copy"]+c["xor"])
		fmt.Fprintf(stdout, "Replace ops: %d\n", c["replace"])
		fmt.Fprintf(stdout, "Zero ops: %d\n", c["zero"])
		fmt.Fprintf(stdout, "Copy ops: %d\n", c["copy"])
		fmt.Fprintf(stdout, "Xor ops: %d\n", c["xor"])
	}
	if len(failures) > 0 {
		return fmt.Errorf("%d data op(s) failed to decompress", len(failures))
	}
	return nil
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// decompressAll reads every Replace and Xor op in file order and returns one
// message per failure, naming the op index and its payload offset.
func decompressAll(ctx context.Context, r *cow.Reader) []string {
	var out []string
	ops := r.Ops()
	buf := make([]byte, cow.MaxCompressionSize)
	bs := int64(r.Header().BlockSize)
	for i := range ops {
		op := &ops[i]
		if op.Type != cow.OpReplace && op.Type != cow.OpXor {
			continue
		}
		if ctx.Err() != nil {
			return append(out, ctx.Err().Error())
		}
		off, _ := r.DataOffset(op)
		unit := bs << op.FactorShift
		if unit <= 0 || unit > int64(len(buf)) {
			out = append(out, fmt.Sprintf("op %d (%s new_block %d) payload at %#x: unit of %d bytes not supported", i, op.Type, op.NewBlock, off, unit))
			continue
		}
		n, err := r.ReadOpData(i, buf[:unit], 0)
		switch {
		case err != nil:
			out = append(out, fmt.Sprintf("op %d (%s new_block %d) payload at %#x: %v", i, op.Type, op.NewBlock, off, err))
		case int64(n) != unit:
			out = append(out, fmt.Sprintf("op %d (%s new_block %d) payload at %#x: read %d bytes, want %d", i, op.Type, op.NewBlock, off, n, unit))
		}
	}
	return out
}

// extractTo writes Replace and Zero ops at new_block*block_size, in file
// order. Copy and Xor ops need the source image and are refused.
func extractTo(ctx context.Context, r *cow.Reader, w io.WriterAt) error {
	ops := r.Ops()
	bs := int64(r.Header().BlockSize)
	buf := make([]byte, cow.MaxCompressionSize)
	zero := make([]byte, bs)
	for i := range ops {
		if err := ctx.Err(); err != nil {
			return err
		}
		op := &ops[i]
		dst := int64(op.NewBlock) * bs
		switch op.Type {
		case cow.OpReplace:
			unit := bs << op.FactorShift
			if unit <= 0 || unit > int64(len(buf)) {
				return fmt.Errorf("extract: op %d: unit of %d bytes not supported", i, unit)
			}
			n, err := r.ReadOpData(i, buf[:unit], 0)
			if err != nil {
				return fmt.Errorf("extract: %w", err)
			}
			if int64(n) != unit {
				return fmt.Errorf("extract: op %d: read %d bytes, want %d", i, n, unit)
			}
			if _, err := w.WriteAt(buf[:unit], dst); err != nil {
				return fmt.Errorf("extract: writing block %d: %w", op.NewBlock, err)
			}
		case cow.OpZero:
			if _, err := w.WriteAt(zero, dst); err != nil {
				return fmt.Errorf("extract: writing block %d: %w", op.NewBlock, err)
			}
		case cow.OpCopy, cow.OpXor:
			return fmt.Errorf("extract: cannot extract op %d (%s new_block %d): it needs the source image", i, op.Type, op.NewBlock)
		}
	}
	return nil
}
