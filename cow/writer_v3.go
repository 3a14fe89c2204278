package cow

import (
	"errors"
	"fmt"
)

// WriterV3 writes v3 COW images (§3.3–§3.5, AOSP writer_v3.cpp): fixed
// regions (scratch, sequence, resume points, op region of op_count_max
// slots) followed by the data region. Ops are cached and flushed in batches
// (op records in one write, payloads contiguous in another); header.op_count
// on disk changes only when a Label or Finalize rewrites the header, so a
// crash in between leaves the extra ops invisible.
type WriterV3 struct {
	writerBase
	hdr Header

	resume  []ResumePoint // oldest first, at most resume_point_max
	opCount uint64        // ops flushed to the op region
	dataPos int64         // data cursor: where the next payload goes

	cached       []Op
	cachedData   []byte // payloads of cached ops, concatenated in op order
	cachedBlocks int    // blocks covered by cached data ops
	unitBuf      []byte
}

var _ Writer = (*WriterV3)(nil)

// NewWriterV3 starts a new v3 COW in f: header, zeroed scratch and resume
// regions. opts.OpCountMax (or MaxBlocks) sizes the op region.
func NewWriterV3(f File, opts WriterOptions) (*WriterV3, error) {
	w, err := newWriterV3(f, opts)
	if err != nil {
		return nil, err
	}
	if err := w.writeHeader(); err != nil {
		return nil, err
	}
	if w.hdr.BufferSize > 0 {
		if err := writeZeros(f, int64(w.hdr.HeaderSize), int64(w.hdr.BufferSize)); err != nil {
			return nil, fmt.Errorf("cow: zeroing scratch region: %w", err)
		}
	}
	if err := w.zeroResumeRegion(); err != nil {
		return nil, err
	}
	w.dataPos = w.hdr.DataOffset()
	return w, nil
}

func newWriterV3(f File, opts WriterOptions) (*WriterV3, error) {
	if err := opts.ensureDefaults(); err != nil {
		return nil, err
	}
	cf := opts.CompressionFactor
	if cf&(cf-1) != 0 || cf < opts.BlockSize || cf > MaxCompressionSize || cf/opts.BlockSize > 1<<v3FactorMask {
		return nil, fmt.Errorf("cow: compression factor %d must be a power of two between the block size %d and %d",
			cf, opts.BlockSize, MaxCompressionSize)
	}
	if opts.OpCountMax == 0 {
		opts.OpCountMax = opts.MaxBlocks
	}
	if opts.OpCountMax == 0 {
		return nil, errors.New("cow: v3 writer needs OpCountMax or MaxBlocks to size the op region")
	}
	if opts.OpCountMax > 1<<40 {
		return nil, fmt.Errorf("cow: op_count_max %d is unreasonably large", opts.OpCountMax)
	}
	// The compressor's unit is max_compression_size even for smaller ops
	// (zstd window log = log2(max_compression_size), §2.4).
	comp, err := NewCompressor(opts.Compression, opts.CompressionLevel, int(cf))
	if err != nil {
		return nil, err
	}
	w := &WriterV3{writerBase: writerBase{f: f, opts: opts, comp: comp}}
	w.hdr = Header{
		Magic:                Magic,
		MajorVersion:         3,
		MinorVersion:         0,
		HeaderSize:           HeaderV3Size,
		FooterSize:           0,
		OpSize:               OpV3Size,
		BlockSize:            opts.BlockSize,
		ClusterOps:           0,
		NumMergeOps:          opts.NumMergeOps,
		ResumePointMax:       NumResumePoints,
		OpCountMax:           opts.OpCountMax,
		CompressionAlgorithm: opts.Compression,
		MaxCompressionSize:   cf,
	}
	if !opts.NoScratch {
		w.hdr.BufferSize = BufferRegionDefaultSize
	}
	return w, nil
}

// OpenWriterV3 reopens a v3 COW for appending after label: op_count becomes
// the label's op_index, the data cursor follows the retained ops' payloads,
// later slots and payloads are overwritten. Geometry and the compression
// algorithm come from the file; opts.Compression must match it.
func OpenWriterV3(f File, opts WriterOptions, label uint64) (*WriterV3, error) {
	size, err := fileSize(f)
	if err != nil {
		return nil, err
	}
	r, err := NewReader(f, size, &ReaderOptions{Label: &label, Path: opts.Path})
	if err != nil {
		return nil, err
	}
	h := r.Header()
	if h.MajorVersion != 3 {
		return nil, fmt.Errorf("cow: cannot append to a v%d COW with the v3 writer", h.MajorVersion)
	}
	if opts.Compression != h.CompressionAlgorithm {
		return nil, fmt.Errorf("cow: file uses %v, cannot append %v ops", h.CompressionAlgorithm, opts.Compression)
	}
	opts.BlockSize = h.BlockSize
	opts.CompressionFactor = h.MaxCompressionSize
	opts.OpCountMax = h.OpCountMax
	opts.NumMergeOps = h.NumMergeOps
	opts.NoScratch = h.BufferSize == 0
	w, err := newWriterV3(f, opts)
	if err != nil {
		return nil, err
	}
	w.hdr = h
	ops := r.Ops()
	w.opCount = uint64(len(ops))
	w.dataPos = h.DataOffset()
	for _, op := range ops {
		w.dataPos += int64(op.DataLength)
	}
	// Resume points: the genuine entries are the first
	// min(resume_point_count, resume_point_max) (§3.4); keep those up to
	// and including label.
	n := min(uint64(h.ResumePointCount), uint64(h.ResumePointMax))
	buf := make([]byte, n*ResumePointSize)
	if _, err := f.ReadAt(buf, h.ResumeOffset()); err != nil {
		return nil, fmt.Errorf("cow: reading resume points: %w", err)
	}
	for i := range n {
		rp := DecodeResumePoint(buf[i*ResumePointSize:])
		w.resume = append(w.resume, rp)
		if rp.Label == label {
			break
		}
	}
	return w, nil
}

// Header returns the header as it will be written next.
func (w *WriterV3) Header() Header {
	h := w.hdr
	h.OpCount = w.opCount
	return h
}

func (w *WriterV3) writeHeader() error {
	w.hdr.OpCount = w.opCount
	b, err := w.hdr.MarshalBinary()
	if err != nil {
		return err
	}
	if _, err := w.f.WriteAt(b, 0); err != nil {
		return fmt.Errorf("cow: writing header: %w", err)
	}
	return nil
}

func (w *WriterV3) zeroResumeRegion() error {
	if err := writeZeros(w.f, w.hdr.ResumeOffset(), int64(w.hdr.ResumePointMax)*ResumePointSize); err != nil {
		return fmt.Errorf("cow: zeroing resume region: %w", err)
	}
	return nil
}

// checkOpCount fails when n more ops would exceed op_count_max.
func (w *WriterV3) checkOpCount(n uint64) error {
	if used := w.opCount + uint64(len(w.cached)); used+n > w.hdr.OpCountMax {
		return fmt.Errorf("%w: %d ops written or cached, %d more requested, capacity %d",
			ErrCapacity, used, n, w.hdr.OpCountMax)
	}
	return nil
}

// AddSequenceData writes the sequence region (merge order). It must come
// before any op; it shifts the resume, op and data regions.
func (w *WriterV3) AddSequenceData(blocks []uint32) error {
	if err := w.check(); err != nil {
		return err
	}
	if w.opCount > 0 || len(w.cached) > 0 {
		return fmt.Errorf("cow: sequence data must be written before any op (%d ops exist)", w.opCount+uint64(len(w.cached)))
	}
	w.hdr.SequenceDataCount = uint64(len(blocks))
	buf := make([]byte, 0, 4*len(blocks))
	for _, b := range blocks {
		buf = append(buf, byte(b), byte(b>>8), byte(b>>16), byte(b>>24))
	}
	if _, err := w.f.WriteAt(buf, w.hdr.SequenceOffset()); err != nil {
		return w.fail(fmt.Errorf("cow: writing sequence data: %w", err))
	}
	if err := w.zeroResumeRegion(); err != nil {
		return w.fail(err)
	}
	w.dataPos = w.hdr.DataOffset()
	return nil
}

// cacheOp queues op (and payload) and flushes when the batch is full.
func (w *WriterV3) cacheOp(op Op, payload []byte, blocks int) error {
	if err := w.checkOpCount(1); err != nil {
		return err
	}
	w.cached = append(w.cached, op)
	w.cachedData = append(w.cachedData, payload...)
	w.cachedBlocks += blocks
	if w.cachedBlocks >= w.opts.BatchSize || len(w.cached) >= 16*w.opts.BatchSize {
		return w.flush()
	}
	return nil
}

// flush writes the cached ops in one WriteAt at OPS+16*op_count and their
// payloads contiguously at the data cursor, assigning Replace sources.
func (w *WriterV3) flush() error {
	if len(w.cached) == 0 {
		return nil
	}
	recs := make([]byte, 0, len(w.cached)*OpV3Size)
	cursor := w.dataPos
	for i := range w.cached {
		op := &w.cached[i]
		if op.Type == OpReplace {
			op.Source = uint64(cursor)
		}
		if op.Source > MaxSource {
			return fmt.Errorf("cow: op source %#x does not fit in 48 bits", op.Source)
		}
		cursor += int64(op.DataLength)
		recs = AppendOpV3(recs, *op)
	}
	opOff := w.hdr.OpOffset(w.opCount)
	if _, err := w.f.WriteAt(recs, opOff); err != nil {
		return fmt.Errorf("cow: writing %d ops at %#x: %w", len(w.cached), opOff, err)
	}
	if len(w.cachedData) > 0 {
		if _, err := w.f.WriteAt(w.cachedData, w.dataPos); err != nil {
			return fmt.Errorf("cow: writing %d payload bytes at %#x: %w", len(w.cachedData), w.dataPos, err)
		}
	}
	w.opCount += uint64(len(w.cached))
	w.dataPos = cursor
	w.cached = w.cached[:0]
	w.cachedData = w.cachedData[:0]
	w.cachedBlocks = 0
	return nil
}

// AddCopy queues one Copy op per block.
func (w *WriterV3) AddCopy(newBlock, oldBlock, numBlocks uint64) error {
	if err := w.check(); err != nil {
		return err
	}
	if err := w.validateCopy(newBlock, oldBlock, numBlocks); err != nil {
		return err
	}
	if err := w.checkOpCount(numBlocks); err != nil {
		return err
	}
	for i := range numBlocks {
		if err := w.cacheOp(Op{Type: OpCopy, NewBlock: newBlock + i, Source: oldBlock + i}, nil, 0); err != nil {
			return w.fail(err)
		}
	}
	return nil
}

// AddZeroBlocks queues one Zero op per block.
func (w *WriterV3) AddZeroBlocks(newBlockStart, numBlocks uint64) error {
	if err := w.check(); err != nil {
		return err
	}
	if err := w.validateBlocks(newBlockStart, numBlocks); err != nil {
		return err
	}
	if err := w.checkOpCount(numBlocks); err != nil {
		return err
	}
	for i := range numBlocks {
		if err := w.cacheOp(Op{Type: OpZero, NewBlock: newBlockStart + i}, nil, 0); err != nil {
			return w.fail(err)
		}
	}
	return nil
}

// AddRawBlocks queues Replace ops, each covering the largest power-of-two
// run of blocks ≤ the compression factor (GetCompressionFactor).
func (w *WriterV3) AddRawBlocks(newBlockStart uint64, data []byte) error {
	return w.emitBlocks(OpReplace, newBlockStart, data, 0)
}

// AddXorBlocks queues one Xor op per block (XOR is never multi-block).
func (w *WriterV3) AddXorBlocks(newBlockStart uint64, data []byte, oldBlock uint64, offset uint16) error {
	if err := w.check(); err != nil {
		return err
	}
	src, err := w.xorSource(oldBlock, offset, uint64(len(data))/uint64(w.opts.BlockSize))
	if err != nil {
		return err
	}
	return w.emitBlocks(OpXor, newBlockStart, data, src)
}

// compressionFactor returns the unit size in bytes for a run of remaining
// blocks: the largest power of two ≤ max_compression_size covering no more
// than remaining blocks.
func (w *WriterV3) compressionFactor(remaining int) int {
	bs := int(w.opts.BlockSize)
	f := int(w.hdr.MaxCompressionSize)
	for f > bs && f/bs > remaining {
		f >>= 1
	}
	return f
}

// unitCount returns how many ops emitBlocks would create for n blocks.
func (w *WriterV3) unitCount(typ OpType, n int) uint64 {
	if typ == OpXor {
		return uint64(n)
	}
	var c uint64
	for n > 0 {
		f := w.compressionFactor(n) / int(w.opts.BlockSize)
		n -= f
		c++
	}
	return c
}

func (w *WriterV3) emitBlocks(typ OpType, newBlock uint64, data []byte, xorSrc uint64) error {
	if err := w.check(); err != nil {
		return err
	}
	if err := w.validateData(data); err != nil {
		return err
	}
	bs := int(w.opts.BlockSize)
	total := len(data) / bs
	if err := w.validateBlocks(newBlock, uint64(total)); err != nil {
		return err
	}
	// Check capacity up front so that a failing call adds nothing.
	if err := w.checkOpCount(w.unitCount(typ, total)); err != nil {
		return err
	}
	done := 0
	for done < total {
		// A run never spans a batch flush (runs are limited per batch).
		chunk := min(total-done, w.opts.BatchSize-w.cachedBlocks)
		for chunk > 0 {
			f := bs
			if typ == OpReplace {
				f = w.compressionFactor(chunk)
			}
			unit := data[done*bs : done*bs+f]
			payload, err := w.compressUnit(unit)
			if err != nil {
				return w.fail(fmt.Errorf("cow: compressing blocks %d+%d: %w", newBlock+uint64(done), f/bs, err))
			}
			op := Op{Type: typ, Compression: w.opts.Compression, DataLength: uint32(len(payload)), NewBlock: newBlock + uint64(done)}
			if typ == OpXor {
				op.Source = xorSrc + uint64(done*bs)
			} else {
				op.FactorShift = uint8(log2(uint64(f / bs)))
			}
			if err := w.cacheOp(op, payload, f/bs); err != nil {
				return w.fail(err)
			}
			done += f / bs
			chunk -= f / bs
		}
	}
	return nil
}

// compressUnit returns the stored payload: raw iff compression is not
// smaller (data_length == unit size means raw, for every algorithm, §3.2).
func (w *WriterV3) compressUnit(unit []byte) ([]byte, error) {
	if w.opts.Compression == CompressionNone {
		return unit, nil
	}
	out, err := w.comp.Compress(w.unitBuf[:0], unit)
	if err != nil {
		return nil, err
	}
	w.unitBuf = out
	if len(out) >= len(unit) {
		return unit, nil
	}
	return out, nil
}

// AddLabel flushes, records the resume point {label, op_count} (dropping
// points with labels ≥ label and, beyond resume_point_max, the oldest),
// increments resume_point_count without bound (the AOSP quirk, §3.4),
// writes the resume region and commits the header with fsync.
func (w *WriterV3) AddLabel(label uint64) error {
	if err := w.check(); err != nil {
		return err
	}
	if err := w.flush(); err != nil {
		return w.fail(err)
	}
	kept := w.resume[:0]
	for _, rp := range w.resume {
		if rp.Label < label {
			kept = append(kept, rp)
		}
	}
	w.resume = append(kept, ResumePoint{Label: label, OpIndex: w.opCount})
	w.hdr.ResumePointCount++
	for len(w.resume) > int(w.hdr.ResumePointMax) {
		w.resume = w.resume[1:]
	}
	buf := make([]byte, 0, len(w.resume)*ResumePointSize)
	for _, rp := range w.resume {
		buf = AppendResumePoint(buf, rp)
	}
	if _, err := w.f.WriteAt(buf, w.hdr.ResumeOffset()); err != nil {
		return w.fail(fmt.Errorf("cow: writing resume points: %w", err))
	}
	return w.fail(w.commit())
}

// commit rewrites the header (op_count) and fsyncs.
func (w *WriterV3) commit() error {
	if err := w.writeHeader(); err != nil {
		return err
	}
	return w.f.Sync()
}

// Finalize flushes cached ops, rewrites the header with the final op_count,
// truncates the file after the data region (regular files only) and fsyncs.
// Writing may continue afterwards.
func (w *WriterV3) Finalize() error {
	if err := w.check(); err != nil {
		return err
	}
	if err := w.flush(); err != nil {
		return w.fail(err)
	}
	if err := w.writeHeader(); err != nil {
		return w.fail(err)
	}
	if err := truncateFile(w.f, w.dataPos); err != nil {
		return w.fail(fmt.Errorf("cow: truncating after data region: %w", err))
	}
	return w.fail(w.f.Sync())
}

// Size is the file size after Finalize: the end of the data region,
// including cached payloads (GetCowSize).
func (w *WriterV3) Size() int64 { return w.dataPos + int64(len(w.cachedData)) }

// Close flushes cached ops and payloads (without rewriting the header, so
// they stay invisible until a Label or Finalize) and releases the writer.
// It does not close f.
func (w *WriterV3) Close() error {
	if w.closed {
		return ErrWriterClosed
	}
	if w.err == nil {
		w.fail(w.flush())
	}
	w.closed = true
	return w.err
}
