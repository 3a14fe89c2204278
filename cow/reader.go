package cow

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// ReaderOptions configures NewReader and Open. The zero value (or nil) parses
// the whole file for user-space merging, as snapuserd does.
type ReaderOptions struct {
	// Path names the file in error messages.
	Path string
	// Label, if set, parses only up to and including this label (writer
	// resume, §2.8/§3.4). The label must exist. Merge order is not prepared.
	Label *uint64
	// Legacy selects the dm-snapshot ordering: non-ordered ops are sorted
	// descending instead of ascending (§4.3).
	Legacy bool
	// AllowNonstandard accepts this project's non-AOSP compression ids
	// (snappy 0xF0, xz 0xF1). AOSP readers reject them, so by default this
	// reader does too (the writer's WriterOptions.AllowNonstandard).
	AllowNonstandard bool
}

// Reader is a parsed COW image (AOSP CowReader). All methods are safe for
// concurrent use: the parsed state is immutable and payloads are read with
// ReadAt only.
type Reader struct {
	ra     io.ReaderAt
	size   int64
	closer io.Closer
	opts   ReaderOptions

	hdr         Header
	footer      Footer
	hasFooter   bool
	lastLabel   uint64
	hasLabel    bool
	compression Compression // file-wide algorithm (v3 header, inferred for v2)

	ops       []Op
	opOffsets []int64
	xorLoc    map[uint64]int64 // Xor new_block → payload offset (first op wins, as AOSP)

	endOffset  int64 // v2: op position after the last parsed op; v3: OPS + 16*len(ops)
	dataCursor int64 // data cursor after the last parsed op

	seq []uint32 // sequence data (v2 sequence ops concatenated, v3 sequence region)

	mergeIdx          []int // indices into ops, final merge order
	mergeOpStart      uint64
	numOrderedToMerge uint64
}

// NewReader parses the COW image in r, which is size bytes long. opts may be
// nil. The Reader does not own r.
func NewReader(r io.ReaderAt, size int64, opts *ReaderOptions) (*Reader, error) {
	rd := &Reader{ra: r, size: size}
	if opts != nil {
		rd.opts = *opts
		if opts.Label != nil {
			l := *opts.Label
			rd.opts.Label = &l
		}
	}
	if err := rd.parse(); err != nil {
		return nil, rd.withPath(err)
	}
	return rd, nil
}

// Open opens and parses the COW file or block device at path. The Reader owns
// the file; Close closes it. opts.Path defaults to path.
func Open(path string, opts *ReaderOptions) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	// Seek rather than Stat so that block devices report their size.
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("cow: %s: determining size: %w", path, err)
	}
	var o ReaderOptions
	if opts != nil {
		o = *opts
	}
	if o.Path == "" {
		o.Path = path
	}
	r, err := NewReader(f, size, &o)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.closer = f
	return r, nil
}

// name is the path for messages.
func (r *Reader) name() string {
	if r.opts.Path != "" {
		return r.opts.Path
	}
	return "COW image"
}

// Close closes the underlying file if the Reader was made by Open.
func (r *Reader) Close() error {
	if r.closer == nil {
		return nil
	}
	c := r.closer
	r.closer = nil
	return c.Close()
}

// withPath fills in the path of FormatErrors.
func (r *Reader) withPath(err error) error {
	var fe *FormatError
	if errors.As(err, &fe) && fe.Path == "" {
		fe.Path = r.opts.Path
	}
	return err
}

func (r *Reader) parse() error {
	if r.size < PrefixSize {
		return formatErr(0, "file too small for a COW header: size", r.size)
	}
	h, err := ReadHeader(r.ra)
	if err != nil {
		return err
	}
	if int64(h.HeaderSize) > r.size {
		return formatErr(12, "header_size beyond end of file:", h.HeaderSize)
	}
	r.hdr = h
	switch h.MajorVersion {
	case 1, 2:
		if err := r.parseV2(); err != nil {
			return err
		}
	case 3:
		if err := r.parseV3(); err != nil {
			return err
		}
	default:
		return formatErr(8, "unsupported major_version", h.MajorVersion)
	}
	if r.opts.Label != nil {
		// Writer resume: not ready to merge (§4.1).
		return nil
	}
	return r.prepMergeOps()
}

// Header returns the parsed header. For v1 files BufferSize is 0 (§2.1).
func (r *Reader) Header() Header { return r.hdr }

// Footer returns the v2 footer, if the file has one.
func (r *Reader) Footer() (Footer, bool) { return r.footer, r.hasFooter }

// LastLabel returns the last Label op parsed (v1/v2). As AOSP's CowReader,
// it never reports a label for v3 files: the newest resume point need not be
// the last durable one (a torn write can leave a stale slot), so v3 callers
// that need a resume point open the file at that label (ReaderOptions.Label).
func (r *Reader) LastLabel() (uint64, bool) { return r.lastLabel, r.hasLabel }

// Compression returns the file-wide compression algorithm: the v3 header's,
// or for v1/v2 the algorithm of the first op that names one (§2.4).
func (r *Reader) Compression() Compression { return r.compression }

// Ops returns the operations in file order: for v1/v2 every op parsed
// (including Label, Cluster and Sequence ops, without the footer), for v3 the
// op region. Replace and Xor ops carry the file-wide compression algorithm in
// Compression (as AOSP's translated ops do); other ops carry none. The slice
// is shared: do not modify it.
func (r *Reader) Ops() []Op { return r.ops }

// OpOffset returns the file offset of Ops()[i].
func (r *Reader) OpOffset(i int) int64 { return r.opOffsets[i] }

// EndOffset is where the next op would go: for v1/v2 the op position right
// after the last parsed op (the footer's position in a finalized file, the
// position after the label with ReaderOptions.Label); for v3 OPS + 16*len(Ops()).
func (r *Reader) EndOffset() int64 { return r.endOffset }

// DataCursor is the data cursor (§2.6, §3.3) after the last parsed op: where
// the next payload would go.
func (r *Reader) DataCursor() int64 { return r.dataCursor }

// SequenceData returns the merge-sequence entries (destination blocks): the
// concatenated payloads of v2 Sequence ops or the v3 sequence region. It is
// nil when the reader was opened at a label (merge data is not prepared).
func (r *Reader) SequenceData() []uint32 { return r.seq }

// Size returns the image size given to NewReader.
func (r *Reader) Size() int64 { return r.size }

// MergeOrder returns the data ops in final merge order (§4.3), one entry per
// merge step; len = num_total_data_ops. Entry i maps to Ops()[MergeIndex()[i]].
func (r *Reader) MergeOrder() []Op {
	out := make([]Op, len(r.mergeIdx))
	for i, j := range r.mergeIdx {
		out[i] = r.ops[j]
	}
	return out
}

// MergeIndex returns, for each merge step, the index into Ops() of its op.
// The slice is shared: do not modify it.
func (r *Reader) MergeIndex() []int { return r.mergeIdx }

// MergeOpStart is header.num_merge_ops: the index into MergeOrder of the
// first op not yet merged. It may exceed len(MergeOrder()) in a corrupt file.
func (r *Reader) MergeOpStart() uint64 { return r.mergeOpStart }

// NumOrderedOpsToMerge is max(0, len(ordered prefix of the merge order) −
// num_merge_ops) (num_ordered_ops_to_merge).
func (r *Reader) NumOrderedOpsToMerge() uint64 { return r.numOrderedToMerge }

// DataOffset returns the absolute file offset of op's payload: for Xor ops
// the data-cursor location recorded for its new_block (the first Xor op with
// that new_block, as in AOSP), for Replace and Sequence ops the source field.
func (r *Reader) DataOffset(op *Op) (int64, error) {
	switch op.Type {
	case OpXor:
		off, ok := r.xorLoc[op.NewBlock]
		if !ok {
			return 0, r.withPath(&FormatError{Off: -1, Op: -1, Msg: "no XOR data location for new_block", Val: op.NewBlock})
		}
		return off, nil
	case OpReplace, OpSequence:
		return int64(op.Source), nil
	}
	return 0, r.withPath(&FormatError{Off: -1, Op: -1, Msg: "op has no payload: type", Val: op.Type})
}

// checkRaw applies AOSP GetRawBytes' bounds (§4.2) to [off, off+n).
func (r *Reader) checkRaw(off, n int64) error {
	switch {
	case off < int64(r.hdr.HeaderSize):
		return formatErr(off, "payload offset inside the header: length", n)
	case off >= r.size:
		return formatErr(off, "payload offset beyond end of file: length", n)
	case n >= r.size || n < 0:
		return formatErr(off, "payload length larger than file:", n)
	case off+n > r.size:
		return formatErr(off, "payload runs past end of file: length", n)
	}
	return nil
}

// readRaw reads exactly len(p) bytes at off after the GetRawBytes checks.
func (r *Reader) readRaw(p []byte, off int64) error {
	if err := r.checkRaw(off, int64(len(p))); err != nil {
		return err
	}
	if len(p) == 0 {
		return nil
	}
	if err := readAtFull(r.ra, p, off); err != nil {
		return fmt.Errorf("cow: %s: reading %d bytes at %#x: %w", r.name(), len(p), off, err)
	}
	return nil
}

// readAtFull is ReadAt that treats a short read as io.ErrUnexpectedEOF and
// a full read with io.EOF as success.
func readAtFull(ra io.ReaderAt, p []byte, off int64) error {
	n, err := ra.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// unitSize is op_buf_size = block_size << k (§4.2).
func (r *Reader) unitSize(op *Op) int64 { return int64(r.hdr.BlockSize) << op.FactorShift }

// ReadData reads op's payload, decoded, into buf: bytes [ignoreBytes,
// ignoreBytes+len(buf)) of the op's unit (block_size << k bytes). It follows
// AOSP's decision table (§4.2): raw copy for uncompressed data, for lz4/zstd
// (and every v3 algorithm) when data_length equals the unit size; v2 gz and
// brotli payloads are always decompressed. It returns the number of bytes
// written to buf, which is less than len(buf) only at the end of the unit
// (or of a raw payload shorter than the unit).
func (r *Reader) ReadData(op *Op, buf []byte, ignoreBytes int) (int, error) {
	return r.readData(-1, op, buf, ignoreBytes)
}

// ReadOpData is ReadData for Ops()[i]; errors name the op index.
func (r *Reader) ReadOpData(i int, buf []byte, ignoreBytes int) (int, error) {
	if i < 0 || i >= len(r.ops) {
		return 0, fmt.Errorf("cow: op index %d out of range [0,%d)", i, len(r.ops))
	}
	return r.readData(int64(i), &r.ops[i], buf, ignoreBytes)
}

func (r *Reader) readData(idx int64, op *Op, buf []byte, ignoreBytes int) (int, error) {
	fail := func(off int64, msg string, val any) (int, error) {
		return 0, &FormatError{Path: r.opts.Path, Off: off, Op: idx, Msg: msg, Val: val}
	}
	if op.Type != OpReplace && op.Type != OpXor {
		return fail(-1, "ReadData on op without payload: type", op.Type)
	}
	unit := r.unitSize(op)
	if unit == 0 {
		return fail(-1, "compression unit size is zero (block_size 0)", nil)
	}
	if unit > MaxCompressionSize {
		return fail(-1, "compression unit larger than 256 KiB:", unit)
	}
	if ignoreBytes < 0 {
		return fail(-1, "negative ignoreBytes", ignoreBytes)
	}
	off, err := r.DataOffset(op)
	if err != nil {
		var fe *FormatError
		if errors.As(err, &fe) {
			fe.Op = idx
		}
		return 0, err
	}
	dl := int64(op.DataLength)
	if err := r.checkRaw(off, dl); err != nil {
		var fe *FormatError
		if errors.As(err, &fe) {
			fe.Op, fe.Path = idx, r.opts.Path
		}
		return 0, err
	}
	alg := r.compression
	raw := false
	switch alg {
	case CompressionNone:
		raw = true
	case CompressionGz, CompressionBrotli:
		// v2 always decompresses these, even at data_length == unit
		// (AOSP bug 310191184); v3 stores raw iff data_length == unit.
		raw = r.hdr.Version().RawAtUnitSize() && dl == unit
	case CompressionLz4, CompressionZstd, CompressionSnappy, CompressionXz:
		raw = dl == unit
	default:
		return fail(off, "unknown compression algorithm", alg)
	}
	if raw {
		if int64(ignoreBytes) > dl {
			return fail(off, fmt.Sprintf("ignoreBytes %d beyond payload length", ignoreBytes), dl)
		}
		n := min(int64(len(buf)), dl-int64(ignoreBytes))
		if n == 0 {
			return 0, nil
		}
		if err := r.readRaw(buf[:n], off+int64(ignoreBytes)); err != nil {
			return 0, err
		}
		return int(n), nil
	}
	if int64(ignoreBytes) > unit {
		return fail(off, fmt.Sprintf("ignoreBytes %d beyond unit size", ignoreBytes), unit)
	}
	// Pooled buffers for the payload and, unless buf takes the whole unit
	// (decoded straight into it), the decoded unit.
	var src []byte
	if dl <= MaxCompressionSize {
		sp := dataPool.Get().(*[]byte)
		defer dataPool.Put(sp)
		src = (*sp)[:dl]
	} else {
		src = make([]byte, dl)
	}
	if err := r.readRaw(src, off); err != nil {
		return 0, err
	}
	var dst []byte
	direct := ignoreBytes == 0 && int64(len(buf)) >= unit
	if direct {
		dst = buf[:unit]
	} else {
		dp := dataPool.Get().(*[]byte)
		defer dataPool.Put(dp)
		dst = (*dp)[:unit]
	}
	n, err := Decompress(alg, dst, src)
	if err != nil {
		return 0, &FormatError{Path: r.opts.Path, Off: off, Op: idx,
			Msg: fmt.Sprintf("%s decompression of %d-byte payload (new_block %d) failed: %v", alg, dl, op.NewBlock, err)}
	}
	if int64(n) != unit {
		return fail(off, fmt.Sprintf("%s payload (new_block %d) decompressed to %d bytes, want", alg, op.NewBlock, n), unit)
	}
	if direct {
		return int(unit), nil
	}
	return copy(buf, dst[ignoreBytes:]), nil
}

// dataPool holds MaxCompressionSize buffers for readData.
var dataPool = sync.Pool{New: func() any { b := make([]byte, MaxCompressionSize); return &b }}
