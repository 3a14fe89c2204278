package ops

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/vabc-go/vabc/update_engine/bspatch"
	"github.com/vabc-go/vabc/update_engine/metadata"
)

var (
	// ErrUnsupported marks operation types this package cannot execute.
	ErrUnsupported = errors.New("unsupported op")
	// ErrHashMismatch marks data_sha256_hash / src_sha256_hash mismatches.
	ErrHashMismatch = errors.New("hash mismatch")
)

// Env is what an operation reads from and writes to.
type Env struct {
	BlockSize int64
	// Source is the old partition image; needed by SOURCE_* ops.
	Source io.ReaderAt
	// SourceSize bounds source extents before a diff op loads them into
	// memory; 0 means unknown (only MaxDiffSource applies).
	SourceSize int64
	// Target is the new partition image.
	Target io.WriterAt
	// TargetZeroed says the target is known to read as zeros (a freshly
	// truncated file), so ZERO and DISCARD need not write.
	TargetZeroed bool
}

// Supported reports whether Execute handles operations of type t.
func Supported(t metadata.InstallOperation_Type) bool {
	switch t {
	case metadata.InstallOperation_REPLACE, metadata.InstallOperation_REPLACE_BZ, metadata.InstallOperation_REPLACE_XZ,
		metadata.InstallOperation_REPLACE_ZSTD, metadata.InstallOperation_ZERO, metadata.InstallOperation_DISCARD,
		metadata.InstallOperation_SOURCE_COPY, metadata.InstallOperation_SOURCE_BSDIFF, metadata.InstallOperation_BROTLI_BSDIFF,
		metadata.InstallOperation_PUFFDIFF, metadata.InstallOperation_LZ4DIFF_BSDIFF, metadata.InstallOperation_LZ4DIFF_PUFFDIFF:
		return true
	}
	return false
}

// NeedsSource reports whether operations of type t read the old partition.
func NeedsSource(t metadata.InstallOperation_Type) bool {
	switch t {
	case metadata.InstallOperation_SOURCE_COPY, metadata.InstallOperation_SOURCE_BSDIFF,
		metadata.InstallOperation_BROTLI_BSDIFF, metadata.InstallOperation_PUFFDIFF,
		metadata.InstallOperation_ZUCCHINI, metadata.InstallOperation_LZ4DIFF_BSDIFF,
		metadata.InstallOperation_LZ4DIFF_PUFFDIFF, opMove, opBsdiff:
		return true
	}
	return false
}

// CheckBlob verifies data_sha256_hash (if present) over blob.
func CheckBlob(op *metadata.InstallOperation, blob []byte) error {
	if want := op.DataSha256Hash; want != nil {
		if got := sha256.Sum256(blob); !bytes.Equal(got[:], want) {
			return fmt.Errorf("data_sha256_hash %x, blob hashes to %x: %w", want, got, ErrHashMismatch)
		}
	}
	return nil
}

// MaxDiffSource bounds the source bytes a bsdiff op may hold in memory. The
// AOSP generator caps diff ops at 200 MiB of destination; sources are similar.
const MaxDiffSource = 2 << 30

var bufPool = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

var zeros = make([]byte, 1<<20)

// Execute applies op with its blob (data_offset/data_length bytes of the
// payload; nil for ops without data). The blob hash is checked first.
func Execute(op *metadata.InstallOperation, blob []byte, env Env) error {
	t := op.GetType()
	if !Supported(t) {
		return fmt.Errorf("%w %s", ErrUnsupported, typeName(t))
	}
	if uint64(len(blob)) != op.GetDataLength() {
		return fmt.Errorf("blob is %d bytes, data_length is %d", len(blob), op.GetDataLength())
	}
	if err := CheckBlob(op, blob); err != nil {
		return err
	}
	bs := env.BlockSize
	switch t {
	case metadata.InstallOperation_ZERO, metadata.InstallOperation_DISCARD:
		if env.TargetZeroed {
			return nil
		}
		for _, e := range op.DstExtents {
			if e.GetStartBlock() == sparseHole {
				continue
			}
			off, n := int64(e.GetStartBlock())*bs, int64(e.GetNumBlocks())*bs
			for n > 0 {
				k := min(n, int64(len(zeros)))
				if _, err := env.Target.WriteAt(zeros[:k], off); err != nil {
					return err
				}
				off += k
				n -= k
			}
		}
		return nil
	case metadata.InstallOperation_REPLACE:
		w := newExtentWriter(env.Target, op.DstExtents, bs)
		if int64(len(blob)) > w.total {
			return fmt.Errorf("%d-byte blob exceeds the %d-byte destination", len(blob), w.total)
		}
		if w.total-int64(len(blob)) >= bs {
			return fmt.Errorf("%d-byte blob leaves more than a block of the %d-byte destination unwritten", len(blob), w.total)
		}
		if _, err := w.Write(blob); err != nil {
			return err
		}
		_, err := w.Write(zeros[:w.total-w.written]) // proto: zero padding to the block
		return err
	case metadata.InstallOperation_REPLACE_BZ, metadata.InstallOperation_REPLACE_XZ, metadata.InstallOperation_REPLACE_ZSTD:
		r, release, err := Decompressor(t, blob)
		if err != nil {
			return err
		}
		defer release()
		w := newExtentWriter(env.Target, op.DstExtents, bs)
		bp := bufPool.Get().(*[]byte)
		defer bufPool.Put(bp)
		if _, err := io.CopyBuffer(w, r, *bp); err != nil {
			return fmt.Errorf("decompressing %d-byte blob: %w", len(blob), err)
		}
		return w.finish()
	case metadata.InstallOperation_SOURCE_COPY:
		if env.Source == nil {
			return errors.New("no source image")
		}
		src := &extentReader{r: env.Source, ext: op.SrcExtents, bs: bs}
		var h hash.Hash
		var r io.Reader = src
		if op.SrcSha256Hash != nil {
			h = sha256.New()
			r = io.TeeReader(src, h)
		}
		w := newExtentWriter(env.Target, op.DstExtents, bs)
		bp := bufPool.Get().(*[]byte)
		defer bufPool.Put(bp)
		if _, err := io.CopyBuffer(w, r, *bp); err != nil {
			return fmt.Errorf("copying source: %w", err)
		}
		if h != nil {
			if got := h.Sum(nil); !bytes.Equal(got, op.SrcSha256Hash) {
				return fmt.Errorf("src_sha256_hash %x, source blocks hash to %x: %w", op.SrcSha256Hash, got, ErrHashMismatch)
			}
		}
		return w.finish()
	case metadata.InstallOperation_SOURCE_BSDIFF, metadata.InstallOperation_BROTLI_BSDIFF:
		if env.Source == nil {
			return errors.New("no source image")
		}
		n := ExtentBytes(op.SrcExtents, bs)
		if n > MaxDiffSource || (env.SourceSize > 0 && n > env.SourceSize) {
			return fmt.Errorf("diff op reads %d source bytes (source image %d bytes, limit %d)", n, env.SourceSize, int64(MaxDiffSource))
		}
		old, err := ReadSource(op, env.Source, bs)
		if err != nil {
			return err
		}
		h, err := bspatch.ParseHeader(blob)
		if err != nil {
			return err
		}
		w := newExtentWriter(env.Target, op.DstExtents, bs)
		want := w.total
		if op.DstLength != nil {
			want = int64(op.GetDstLength())
		}
		if h.NewSize != want {
			return fmt.Errorf("patch new size %d, destination is %d bytes", h.NewSize, want)
		}
		if err := bspatch.Apply(old, blob, w); err != nil {
			return err
		}
		if w.written < w.total {
			_, err := w.Write(zeros[:w.total-w.written])
			return err
		}
		return nil
	case metadata.InstallOperation_PUFFDIFF:
		return executePuffdiff(op, blob, env)
	case metadata.InstallOperation_LZ4DIFF_BSDIFF, metadata.InstallOperation_LZ4DIFF_PUFFDIFF:
		return executeLz4diff(op, blob, env)
	}
	return fmt.Errorf("%w %s", ErrUnsupported, typeName(t))
}

// ReadSource reads the concatenated source blocks of op and checks src_sha256_hash
// over them; the result is cut to src_length when that is set (minor <= 3).
func ReadSource(op *metadata.InstallOperation, src io.ReaderAt, bs int64) ([]byte, error) {
	buf := make([]byte, ExtentBytes(op.SrcExtents, bs))
	if _, err := io.ReadFull(&extentReader{r: src, ext: op.SrcExtents, bs: bs}, buf); err != nil {
		return nil, fmt.Errorf("reading source: %w", err)
	}
	if want := op.SrcSha256Hash; want != nil {
		if got := sha256.Sum256(buf); !bytes.Equal(got[:], want) {
			return nil, fmt.Errorf("src_sha256_hash %x, source blocks hash to %x: %w", want, got, ErrHashMismatch)
		}
	}
	if op.SrcLength != nil && int(op.GetSrcLength()) < len(buf) {
		buf = buf[:op.GetSrcLength()]
	}
	return buf, nil
}

func typeName(t metadata.InstallOperation_Type) string {
	if _, ok := metadata.InstallOperation_Type_name[int32(t)]; ok {
		return t.String()
	}
	return fmt.Sprintf("type %d", int32(t))
}

// The deprecated in-place major-1 operations, by number (their generated
// names carry a deprecation marker).
const (
	opMove   metadata.InstallOperation_Type = 2
	opBsdiff metadata.InstallOperation_Type = 3
)
