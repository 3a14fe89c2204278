package cow

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// WriterV2 writes v2 COW images (§2.6–§2.9, AOSP writer_v2.cpp): clusters of
// cluster_ops slots (cluster_ops−1 ops and a Cluster op), each followed by
// the payloads of its data ops; one block per data op; labels fsync;
// Finalize writes the footer into the next free slot and truncates.
//
// Ops and payloads are written as they are added (no batching: AOSP's
// batch_write mode produces the same bytes).
type WriterV2 struct {
	writerBase
	hdr Header

	clusterSize int64 // cluster_ops*20, 0 when unclustered
	nextOpPos   int64 // where the next op record goes
	nextDataPos int64 // where the next payload goes (data cursor)
	curCluster  int64 // op bytes used in the current cluster
	curData     int64 // payload bytes in the current cluster
	numOps      uint64
	dataOps     uint64 // data ops written (sequence ops must come first)
	blockBuf    []byte
	wb          writeBuffer // pending ops and payloads (flushed at cluster ends, labels, Finalize)
}

var _ Writer = (*WriterV2)(nil)

// NewWriterV2 starts a new v2 COW in f: it writes the header and a zeroed
// scratch region. The op stream begins right after.
func NewWriterV2(f File, opts WriterOptions) (*WriterV2, error) {
	w, err := newWriterV2(f, opts)
	if err != nil {
		return nil, err
	}
	hdr, err := w.hdr.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteAt(hdr, 0); err != nil {
		return nil, fmt.Errorf("cow: writing header: %w", err)
	}
	if w.hdr.BufferSize > 0 {
		if err := writeZeros(f, int64(w.hdr.HeaderSize), int64(w.hdr.BufferSize)); err != nil {
			return nil, fmt.Errorf("cow: zeroing scratch region: %w", err)
		}
	}
	w.initPos()
	return w, nil
}

func newWriterV2(f File, opts WriterOptions) (*WriterV2, error) {
	if err := opts.ensureDefaults(); err != nil {
		return nil, err
	}
	if opts.BlockSize > math.MaxUint16 {
		return nil, fmt.Errorf("cow: v2 block size %d exceeds 65535 (data_length is 16 bits)", opts.BlockSize)
	}
	comp, err := NewCompressor(opts.Compression, opts.CompressionLevel, int(opts.BlockSize))
	if err != nil {
		return nil, err
	}
	w := &WriterV2{writerBase: writerBase{f: f, opts: opts, comp: comp}}
	w.hdr = Header{
		Magic:        Magic,
		MajorVersion: 2,
		MinorVersion: 0,
		HeaderSize:   HeaderV2Size,
		FooterSize:   FooterSize,
		OpSize:       OpV2Size,
		BlockSize:    opts.BlockSize,
		ClusterOps:   opts.ClusterOps,
		NumMergeOps:  opts.NumMergeOps,
	}
	if !opts.NoScratch {
		w.hdr.BufferSize = BufferRegionDefaultSize
	}
	return w, nil
}

// initPos positions the writer at the start of the op stream (InitPos).
func (w *WriterV2) initPos() {
	w.clusterSize = int64(w.hdr.ClusterOps) * OpV2Size
	w.nextOpPos = w.hdr.OpsStart()
	if w.clusterSize != 0 {
		w.nextDataPos = w.nextOpPos + w.clusterSize
	} else {
		w.nextDataPos = w.nextOpPos + OpV2Size
	}
	w.curCluster, w.curData, w.numOps, w.dataOps = 0, 0, 0, 0
}

// OpenWriterV2 reopens a v2 COW for appending after label (OpenForAppend):
// the file is parsed up to and including that label, the writer's positions
// are recomputed by replaying those ops, and new ops overwrite whatever
// followed. Block size, cluster_ops, buffer_size and num_merge_ops come from
// the file; opts supplies the compression (which must match the file's).
func OpenWriterV2(f File, opts WriterOptions, label uint64) (*WriterV2, error) {
	size, err := fileSize(f)
	if err != nil {
		return nil, err
	}
	r, err := NewReader(f, size, &ReaderOptions{Label: &label, Path: opts.Path})
	if err != nil {
		return nil, err
	}
	h := r.Header()
	if h.MajorVersion > 2 {
		return nil, fmt.Errorf("cow: cannot append to a v%d COW with the v2 writer", h.MajorVersion)
	}
	if h.MajorVersion < 2 {
		return nil, errors.New("cow: appending to v1 COW files is not supported")
	}
	opts.BlockSize = h.BlockSize
	opts.ClusterOps = h.ClusterOps
	opts.Unclustered = h.ClusterOps == 0
	opts.NumMergeOps = h.NumMergeOps
	opts.NoScratch = h.BufferSize == 0
	if fc := r.Compression(); fc != CompressionNone && fc != opts.Compression {
		return nil, fmt.Errorf("cow: file uses %v, cannot append %v ops (mixed compression)", fc, opts.Compression)
	}
	w, err := newWriterV2(f, opts)
	if err != nil {
		return nil, err
	}
	w.hdr = h
	w.initPos()
	for _, op := range r.Ops() {
		w.addOperation(op)
		if !op.Type.IsMetadata() {
			w.dataOps++
		}
	}
	if w.nextOpPos != r.EndOffset() || w.nextDataPos != r.DataCursor() {
		return nil, fmt.Errorf("cow: internal error: replayed positions (%#x, %#x) differ from the reader's (%#x, %#x)",
			w.nextOpPos, w.nextDataPos, r.EndOffset(), r.DataCursor())
	}
	// The parse stopped at the label, before the Cluster op that may have
	// closed its cluster (always so with cluster_ops 2). Close the cluster
	// again if it has no room for another op, exactly as the original
	// write did; otherwise the next op would take the Cluster op's slot.
	if w.clusterSize != 0 && w.clusterSize < w.curCluster+2*OpV2Size {
		if err := w.emitCluster(); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// fileSize returns the size of f: Stat for files, Seek for devices.
func fileSize(f File) (int64, error) {
	if s, ok := f.(io.Seeker); ok && isDevice(f) {
		return s.Seek(0, io.SeekEnd)
	}
	if st, ok := f.(interface{ Stat() (os.FileInfo, error) }); ok {
		fi, err := st.Stat()
		if err != nil {
			return 0, err
		}
		return fi.Size(), nil
	}
	if s, ok := f.(interface{ Size() int64 }); ok {
		return s.Size(), nil
	}
	if s, ok := f.(io.Seeker); ok {
		return s.Seek(0, io.SeekEnd)
	}
	return 0, errors.New("cow: cannot determine the file size (File has no Stat, Size or Seek)")
}

// Header returns the header as written.
func (w *WriterV2) Header() Header { return w.hdr }

// addOperation advances the positions past op (AddOperation,
// GetNextOpOffset, GetNextDataOffset; §2.6).
func (w *WriterV2) addOperation(op Op) {
	w.numOps++
	if op.Type == OpCluster {
		w.curCluster, w.curData = 0, 0
	} else if w.clusterSize != 0 {
		w.curCluster += OpV2Size
		w.curData += int64(op.DataLength)
	}
	w.nextOpPos += OpV2Size
	switch {
	case op.Type == OpCluster:
		w.nextOpPos += int64(op.Source)
	case (op.Type == OpReplace || op.Type == OpXor) && w.clusterSize == 0:
		w.nextOpPos += int64(op.DataLength)
	}
	w.nextDataPos += int64(op.DataLength)
	switch {
	case op.Type == OpCluster:
		w.nextDataPos += w.clusterSize
	case w.clusterSize == 0:
		w.nextDataPos += OpV2Size
	}
}

// writeOperation writes op (and its payload at the data cursor), advances,
// and closes the cluster when there is no room for one more op plus the
// Cluster op (WriteOperation + EmitClusterIfNeeded).
func (w *WriterV2) writeOperation(op Op, data []byte) error {
	// The op record goes first so that unclustered streams (op, payload,
	// op, …) coalesce into one extent.
	var rec [OpV2Size]byte
	full := w.wb.write(w.nextOpPos, AppendOpV2(rec[:0], op))
	if len(data) > 0 {
		full = w.wb.write(w.nextDataPos, data) || full
	}
	w.addOperation(op)
	if op.Type == OpCluster || full {
		if err := w.flushWrites(); err != nil {
			return err
		}
	}
	if w.clusterSize != 0 && w.clusterSize < w.curCluster+2*OpV2Size {
		return w.emitCluster()
	}
	return nil
}

// flushWrites writes the pending ops and payloads.
func (w *WriterV2) flushWrites() error { return w.wb.flush(w.f) }

// emitCluster writes the Cluster op closing the current cluster; its source
// is the payload bytes plus the unused slot bytes after it.
func (w *WriterV2) emitCluster() error {
	src := w.curData + w.clusterSize - w.curCluster - OpV2Size
	return w.writeOperation(Op{Type: OpCluster, Source: uint64(src)}, nil)
}

// AddCopy writes one Copy op per block.
func (w *WriterV2) AddCopy(newBlock, oldBlock, numBlocks uint64) error {
	if err := w.check(); err != nil {
		return err
	}
	if err := w.validateCopy(newBlock, oldBlock, numBlocks); err != nil {
		return err
	}
	for i := range numBlocks {
		if err := w.writeOperation(Op{Type: OpCopy, NewBlock: newBlock + i, Source: oldBlock + i}, nil); err != nil {
			return w.fail(err)
		}
		w.dataOps++
	}
	return nil
}

// AddRawBlocks writes one Replace op per block.
func (w *WriterV2) AddRawBlocks(newBlockStart uint64, data []byte) error {
	return w.emitBlocks(OpReplace, newBlockStart, data, 0)
}

// AddXorBlocks writes one Xor op per block; block i reads the source device
// at oldBlock*block_size + offset + i*block_size.
func (w *WriterV2) AddXorBlocks(newBlockStart uint64, data []byte, oldBlock uint64, offset uint16) error {
	if err := w.check(); err != nil {
		return err
	}
	src, err := w.xorSource(oldBlock, offset, uint64(len(data))/uint64(w.opts.BlockSize))
	if err != nil {
		return err
	}
	return w.emitBlocks(OpXor, newBlockStart, data, src)
}

func (w *WriterV2) emitBlocks(typ OpType, newBlock uint64, data []byte, xorSrc uint64) error {
	if err := w.check(); err != nil {
		return err
	}
	if err := w.validateData(data); err != nil {
		return err
	}
	bs := int(w.opts.BlockSize)
	n := uint64(len(data) / bs)
	if err := w.validateBlocks(newBlock, n); err != nil {
		return err
	}
	for i := range n {
		block := data[int(i)*bs : int(i+1)*bs]
		payload, err := w.compressBlock(block)
		if err != nil {
			return w.fail(fmt.Errorf("cow: compressing block %d: %w", newBlock+i, err))
		}
		op := Op{Type: typ, Compression: w.opts.Compression, DataLength: uint32(len(payload)), NewBlock: newBlock + i}
		if typ == OpReplace {
			op.Source = uint64(w.nextDataPos)
		} else {
			op.Source = xorSrc + i*uint64(bs)
		}
		if err := w.writeOperation(op, payload); err != nil {
			return w.fail(err)
		}
		w.dataOps++
	}
	return nil
}

// compressBlock returns the payload for one block (§2.4): none → raw;
// gz/brotli → always compressed (even when not smaller); lz4/zstd and the
// extensions → raw when compression does not make it smaller.
func (w *WriterV2) compressBlock(block []byte) ([]byte, error) {
	alg := w.opts.Compression
	if alg == CompressionNone {
		return block, nil
	}
	out, err := w.comp.Compress(w.blockBuf[:0], block)
	if err != nil {
		return nil, err
	}
	w.blockBuf = out
	switch alg {
	case CompressionGz, CompressionBrotli:
		if len(out) > math.MaxUint16 {
			return nil, fmt.Errorf("%v output of %d bytes does not fit the 16-bit data_length", alg, len(out))
		}
		return out, nil
	}
	if len(out) >= len(block) {
		return block, nil
	}
	return out, nil
}

// AddZeroBlocks writes one Zero op per block.
func (w *WriterV2) AddZeroBlocks(newBlockStart, numBlocks uint64) error {
	if err := w.check(); err != nil {
		return err
	}
	if err := w.validateBlocks(newBlockStart, numBlocks); err != nil {
		return err
	}
	for i := range numBlocks {
		if err := w.writeOperation(Op{Type: OpZero, NewBlock: newBlockStart + i}, nil); err != nil {
			return w.fail(err)
		}
		w.dataOps++
	}
	return nil
}

// AddLabel writes a Label op and fsyncs (EmitLabel). No footer is written.
func (w *WriterV2) AddLabel(label uint64) error {
	if err := w.check(); err != nil {
		return err
	}
	if err := w.writeOperation(Op{Type: OpLabel, Source: label}, nil); err != nil {
		return w.fail(err)
	}
	if err := w.flushWrites(); err != nil {
		return w.fail(err)
	}
	return w.fail(w.f.Sync())
}

// sequenceEntriesPerOp is 2*block_size/4 (2048 for 4 KiB blocks), capped so
// that data_length fits 16 bits.
func (w *WriterV2) sequenceEntriesPerOp() int {
	return min(int(2*w.opts.BlockSize/4), math.MaxUint16/4)
}

// AddSequenceData writes Sequence ops carrying blocks (u32 LE), at most
// 2*block_size/4 entries per op. It must precede all data ops and needs a
// clustered file (unclustered streams cannot carry sequence payloads, §2.6).
func (w *WriterV2) AddSequenceData(blocks []uint32) error {
	if err := w.check(); err != nil {
		return err
	}
	if w.dataOps > 0 {
		return fmt.Errorf("cow: sequence data must precede data ops (%d already written)", w.dataOps)
	}
	if w.clusterSize == 0 {
		return errors.New("cow: sequence data needs a clustered v2 file (cluster_ops 0 does not skip sequence payloads)")
	}
	per := w.sequenceEntriesPerOp()
	for len(blocks) > 0 {
		n := min(len(blocks), per)
		payload := make([]byte, 0, 4*n)
		for _, b := range blocks[:n] {
			payload = append(payload, byte(b), byte(b>>8), byte(b>>16), byte(b>>24))
		}
		op := Op{Type: OpSequence, DataLength: uint32(len(payload)), Source: uint64(w.nextDataPos)}
		if err := w.writeOperation(op, payload); err != nil {
			return w.fail(err)
		}
		blocks = blocks[n:]
	}
	return nil
}

// Finalize writes the footer (§2.6): zero the unused slots of the current
// cluster, close the cluster with an extra Cluster op if it holds payload,
// write footer + 64 zero bytes in the next slot, truncate after it, fsync.
// The positions are then restored so that writing can continue (the next op
// overwrites the extra Cluster op and the footer).
func (w *WriterV2) Finalize() error {
	if err := w.check(); err != nil {
		return err
	}
	if err := w.flushWrites(); err != nil {
		return w.fail(err)
	}
	saved := *w
	extra := false
	if w.clusterSize != 0 {
		if err := writeZeros(w.f, w.nextOpPos, w.clusterSize-w.curCluster); err != nil {
			return w.fail(fmt.Errorf("cow: clearing unused op slots at %#x: %w", w.nextOpPos, err))
		}
		if w.curData > 0 {
			if err := w.emitCluster(); err != nil {
				return w.fail(err)
			}
			extra = true
		}
	}
	if err := w.flushWrites(); err != nil { // the extra Cluster op
		return w.fail(err)
	}
	footerPos := w.nextOpPos
	foot := AppendFooter(nil, Footer{OpsSize: w.numOps * OpV2Size, NumOps: w.numOps})
	if _, err := w.f.WriteAt(foot, footerPos); err != nil {
		return w.fail(fmt.Errorf("cow: writing footer at %#x: %w", footerPos, err))
	}
	if err := truncateFile(w.f, footerPos+FooterSize); err != nil {
		return w.fail(fmt.Errorf("cow: truncating after footer: %w", err))
	}
	if err := w.f.Sync(); err != nil {
		return w.fail(err)
	}
	if extra {
		buf, wb := w.blockBuf, w.wb
		*w = saved
		w.blockBuf, w.wb = buf, wb
	}
	return nil
}

// Size is the file size Finalize produces at this point (GetCowSize).
func (w *WriterV2) Size() int64 {
	if w.clusterSize != 0 && w.curData > 0 {
		// Finalize adds a Cluster op; the footer then starts a new
		// cluster after the payload.
		return w.nextDataPos + FooterSize
	}
	return w.nextOpPos + FooterSize
}

// Close releases the writer without finalizing. It does not close f.
func (w *WriterV2) Close() error {
	if w.closed {
		return ErrWriterClosed
	}
	if w.err == nil {
		w.fail(w.flushWrites())
	}
	w.closed = true
	return w.err
}
