package cow

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// File is what the writers write to: a regular file or a block device.
// *os.File satisfies it. Truncate is skipped when the file is a device
// (detected through Stat when the File has one).
type File interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Truncate(size int64) error
}

// WriterOptions configures NewWriterV2 and NewWriterV3. The zero value gives
// AOSP's defaults (CowOptions): 4 KiB blocks, 1024-op clusters (v2), a 2 MiB
// scratch region, no compression, compression factor 4 KiB (v3).
type WriterOptions struct {
	// BlockSize is block_size (default 4096). v2 refuses > 65535.
	BlockSize uint32
	// ClusterOps is cluster_ops for v2: op slots per cluster (default
	// DefaultClusterOps). 1 is invalid. Set Unclustered for cluster_ops 0.
	ClusterOps uint32
	// Unclustered writes a v2 stream with cluster_ops = 0 (each op directly
	// followed by its payload). Such files cannot carry sequence ops.
	Unclustered bool
	// Compression is the algorithm for every data op (file-wide in v3).
	Compression Compression
	// CompressionLevel is used when CompressionLevelSet; otherwise
	// DefaultLevel(Compression).
	CompressionLevel    int
	CompressionLevelSet bool
	// CompressionFactor is v3's max_compression_size: the largest unit
	// compressed as one (4 KiB … 256 KiB, a power of two ≥ BlockSize;
	// default 4 KiB, as CowOptions; AOSP builds default to 64 KiB).
	CompressionFactor uint32
	// NumMergeOps is the initial num_merge_ops (0 in production).
	NumMergeOps uint64
	// NoScratch omits the 2 MiB scratch region (buffer_size = 0).
	NoScratch bool
	// OpCountMax is v3's op_count_max (op region capacity). Default MaxBlocks.
	OpCountMax uint64
	// MaxBlocks, if non-zero, is the partition size in blocks: new blocks
	// must lie below it (ValidateNewBlock).
	MaxBlocks uint64
	// BatchSize is how many data ops the v3 writer caches before one flush
	// (default 1024; ops without data flush at 16×BatchSize).
	BatchSize int
	// AllowNonstandard permits the non-AOSP algorithms (snappy, xz), which
	// AOSP readers reject.
	AllowNonstandard bool
	// Path names the file in error messages.
	Path string
}

const defaultBatchSize = 1024

// SetCompression sets Compression and the level from an option string
// "<algo>[,<level>]" (see ParseCompressionOption).
func (o *WriterOptions) SetCompression(s string) error {
	alg, level, err := ParseCompressionOption(s)
	if err != nil {
		return err
	}
	o.Compression = alg
	o.CompressionLevel = level
	o.CompressionLevelSet = true
	return nil
}

func (o *WriterOptions) ensureDefaults() error {
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.BlockSize&(o.BlockSize-1) != 0 || o.BlockSize < 512 {
		return fmt.Errorf("cow: block size %d is not a power of two ≥ 512", o.BlockSize)
	}
	if o.ClusterOps == 0 && !o.Unclustered {
		o.ClusterOps = DefaultClusterOps
	}
	if o.Unclustered {
		o.ClusterOps = 0
	}
	if o.ClusterOps == 1 {
		return errors.New("cow: cluster_ops 1 is invalid")
	}
	if o.CompressionFactor == 0 {
		o.CompressionFactor = o.BlockSize
	}
	if !o.CompressionLevelSet {
		o.CompressionLevel = DefaultLevel(o.Compression)
	}
	if o.BatchSize <= 0 {
		o.BatchSize = defaultBatchSize
	}
	switch o.Compression {
	case CompressionNone, CompressionGz, CompressionBrotli, CompressionLz4, CompressionZstd:
	case CompressionSnappy, CompressionXz:
		if !o.AllowNonstandard {
			return fmt.Errorf("cow: %v is a non-AOSP compression algorithm (AOSP readers reject it); set AllowNonstandard (--allow-nonstandard) to use it", o.Compression)
		}
	default:
		return fmt.Errorf("%w: %v", ErrAlgorithm, o.Compression)
	}
	return checkLevel(o.Compression, o.CompressionLevel)
}

// Writer is the version-independent writer API (AOSP ICowWriter). A
// Writer is not safe for concurrent use. The first I/O or compression
// failure is sticky: every later call returns it. Invalid arguments (a
// partial block, a block beyond max_blocks, …) are reported without
// poisoning the writer.
type Writer interface {
	// AddCopy records that numBlocks blocks starting at newBlock are copied
	// from oldBlock… of the source device.
	AddCopy(newBlock, oldBlock, numBlocks uint64) error
	// AddRawBlocks stores data (a multiple of the block size) as the new
	// contents of the blocks starting at newBlockStart.
	AddRawBlocks(newBlockStart uint64, data []byte) error
	// AddXorBlocks stores data XOR-ed against the source device at byte
	// offset oldBlock*block_size + offset (offset < block_size).
	AddXorBlocks(newBlockStart uint64, data []byte, oldBlock uint64, offset uint16) error
	// AddZeroBlocks records numBlocks zero blocks starting at newBlockStart.
	AddZeroBlocks(newBlockStart, numBlocks uint64) error
	// AddLabel records a resume point and makes everything before it durable.
	AddLabel(label uint64) error
	// AddSequenceData records the merge order (destination blocks of the
	// ordered ops). It must precede every data op.
	AddSequenceData(blocks []uint32) error
	// Finalize makes the file complete and durable (v2 footer, v3 header).
	// Writing may continue afterwards; Finalize can be called again.
	Finalize() error
	// Size is the file size after Finalize (AOSP GetCowSize).
	Size() int64
	// Close flushes cached ops without finalizing and releases the writer.
	// It does not close the File. A second Close is an error.
	Close() error
}

var (
	// ErrWriterClosed is returned by every call after Close.
	ErrWriterClosed = errors.New("cow: writer is closed")
	// ErrCapacity is returned when the v3 op region (op_count_max) is full.
	ErrCapacity = errors.New("cow: op count exceeds op_count_max")
)

// isDevice reports whether f is a block or character device.
func isDevice(f File) bool {
	s, ok := f.(interface{ Stat() (os.FileInfo, error) })
	if !ok {
		return false
	}
	fi, err := s.Stat()
	return err == nil && fi.Mode()&os.ModeDevice != 0
}

// truncateFile truncates regular files; devices keep their size.
func truncateFile(f File, size int64) error {
	if isDevice(f) {
		return nil
	}
	return f.Truncate(size)
}

// writeZeros writes n zero bytes at off in 64 KiB chunks.
func writeZeros(f File, off, n int64) error {
	var zeros [64 << 10]byte
	for n > 0 {
		c := min(n, int64(len(zeros)))
		if _, err := f.WriteAt(zeros[:c], off); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}

// writerBase holds what both writers share: options, the compressor, the
// sticky error and the closed flag.
type writerBase struct {
	f      File
	opts   WriterOptions
	comp   Compressor
	err    error // sticky: the first failure ends the writer
	closed bool
}

// check returns the sticky error or ErrWriterClosed.
func (w *writerBase) check() error {
	if w.closed {
		return ErrWriterClosed
	}
	return w.err
}

// fail records err as the sticky error and returns it.
func (w *writerBase) fail(err error) error {
	if err != nil && w.err == nil {
		if w.opts.Path != "" {
			err = fmt.Errorf("cow: %s: %w", w.opts.Path, err)
		}
		w.err = err
	}
	return err
}

// validateBlocks checks a destination range against max_blocks and the
// 32-bit new_block field of the in-memory (and v3) op form.
func (w *writerBase) validateBlocks(newBlock, n uint64) error {
	if n == 0 {
		return nil
	}
	last := newBlock + n - 1
	if last < newBlock || last > math.MaxUint32 {
		return fmt.Errorf("cow: new block range %d+%d does not fit in 32 bits", newBlock, n)
	}
	if w.opts.MaxBlocks != 0 && last >= w.opts.MaxBlocks {
		return fmt.Errorf("cow: new block %d beyond max_blocks %d", last, w.opts.MaxBlocks)
	}
	return nil
}

// validateData checks that data is a whole number of blocks.
func (w *writerBase) validateData(data []byte) error {
	if len(data)%int(w.opts.BlockSize) != 0 {
		return fmt.Errorf("cow: data length %d is not a multiple of the block size %d", len(data), w.opts.BlockSize)
	}
	return nil
}

func (w *writerBase) validateCopy(newBlock, oldBlock, n uint64) error {
	if err := w.validateBlocks(newBlock, n); err != nil {
		return err
	}
	if n > 0 && (oldBlock+n-1 < oldBlock || oldBlock+n-1 > MaxSource) {
		return fmt.Errorf("cow: source block range %d+%d does not fit in 48 bits", oldBlock, n)
	}
	return nil
}

func (w *writerBase) xorSource(oldBlock uint64, offset uint16, nBlocks uint64) (uint64, error) {
	bs := uint64(w.opts.BlockSize)
	if uint64(offset) >= bs {
		return 0, fmt.Errorf("cow: xor offset %d not below the block size %d", offset, bs)
	}
	if oldBlock > (MaxSource-uint64(offset))/bs-nBlocks {
		return 0, fmt.Errorf("cow: xor source block %d does not fit in 48 bits", oldBlock)
	}
	return oldBlock*bs + uint64(offset), nil
}

// writeBuffer coalesces the v2 writer's small writes (20-byte op records
// and their payloads) into large WriteAt calls, as AOSP's batch_write mode
// does; the bytes on disk are the same. Writes are kept as extents in
// creation order; a write is appended to an extent ending where it starts
// unless a later extent overlaps it, so flushing the extents in order always
// leaves the newest bytes on disk.
type writeBuffer struct {
	ext  []extent
	size int
}

type extent struct {
	off int64
	b   []byte
}

const (
	writeBufferMax        = 4 << 20
	writeBufferMaxExtents = 16
)

// write queues b at off; it reports whether the buffer should be flushed.
func (wb *writeBuffer) write(off int64, b []byte) bool {
	end := off + int64(len(b))
	for i := len(wb.ext) - 1; i >= 0; i-- {
		e := &wb.ext[i]
		if e.off+int64(len(e.b)) != off {
			continue
		}
		for _, l := range wb.ext[i+1:] {
			if l.off < end && off < l.off+int64(len(l.b)) {
				goto fresh
			}
		}
		e.b = append(e.b, b...)
		wb.size += len(b)
		return wb.size >= writeBufferMax
	}
fresh:
	wb.ext = append(wb.ext, extent{off, append(make([]byte, 0, max(len(b), 64<<10)), b...)})
	wb.size += len(b)
	return wb.size >= writeBufferMax || len(wb.ext) >= writeBufferMaxExtents
}

// flush writes every extent in order and empties the buffer.
func (wb *writeBuffer) flush(f File) error {
	for i, e := range wb.ext {
		if _, err := f.WriteAt(e.b, e.off); err != nil {
			wb.ext = wb.ext[i:]
			return fmt.Errorf("cow: writing %d bytes at %#x: %w", len(e.b), e.off, err)
		}
	}
	wb.ext = wb.ext[:0]
	wb.size = 0
	return nil
}
