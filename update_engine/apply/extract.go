// Package apply writes the partition images a payload describes
// (`payload extract`): full payloads from scratch, delta payloads from the
// old images. Operations of all selected partitions run on a bounded worker
// pool (operations of a raw A/B apply are independent, spec §3.1) under a
// memory budget. Each image is written to a temporary file beside its final
// name, verity/FEC is regenerated (minor >= 6), the SHA-256 is compared with
// new_partition_info.hash, and only then is the file renamed into place: a
// failed extract never leaves a file named <partition>.img behind. Images
// without verity are hashed while their operations run (hash.go), so the
// hash overlaps the decoding instead of following it.
package apply

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/ops"
	"github.com/vabc-go/vabc/update_engine/payload"
	"github.com/vabc-go/vabc/update_engine/verity"
)

// ErrUnsupported marks payloads with operations this package cannot apply.
var ErrUnsupported = errors.New("apply: unsupported")

// ErrVerify marks a final image whose hash does not match the manifest.
var ErrVerify = errors.New("apply: image hash mismatch")

// Options configure Extract. The zero value extracts every partition of a
// full payload into the current directory with GOMAXPROCS workers.
type Options struct {
	OutDir     string   // where <partition>.img is written
	OldDir     string   // where the source <partition>.img of a delta are
	Partitions []string // subset to extract; empty means all
	Threads    int      // worker goroutines; <= 0 means GOMAXPROCS
	// MemoryLimit bounds the bytes of blobs and source buffers held by
	// in-flight operations (default 512 MiB). A single operation larger than
	// the limit runs alone.
	MemoryLimit int64
	// Progress, if set, is called from worker goroutines with the number of
	// destination bytes finished so far and the total.
	Progress func(done, total int64)
	// Limits bound what the payload may ask for (partition sizes) and
	// whether unhashed operations are accepted.
	Limits payload.Limits
}

// PartitionResult describes one written image.
type PartitionResult struct {
	Name     string `json:"name"`
	Path     string `json:"path"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`
	Verified bool   `json:"verified"` // new_partition_info.hash was present and matched
	Verity   bool   `json:"verity"`   // hash tree / FEC were regenerated
}

type partJob struct {
	pu        *metadata.PartitionUpdate
	final     string
	tmp       *os.File
	src       *os.File
	srcSize   int64
	size      int64
	remaining atomic.Int64
	res       PartitionResult
	// ph hashes the image while the ops run (nil when verity or FEC data
	// is regenerated after them, which finishPartition hashes afterwards).
	ph *prefixHasher
}

// regeneratesVerity reports whether finishPartition rewrites parts of the
// image after the operations (hash tree or FEC).
func regeneratesVerity(pu *metadata.PartitionUpdate) bool {
	return (pu.HashTreeExtent != nil && pu.HashTreeDataExtent != nil && pu.HashTreeExtent.GetNumBlocks() > 0) ||
		(pu.FecExtent != nil && pu.FecDataExtent != nil && pu.FecExtent.GetNumBlocks() > 0)
}

// Plan checks that the selected partitions can be applied: every operation is
// supported and every needed source image exists. It fails before anything
// is written.
func Plan(p *payload.Payload, opts Options) ([]*metadata.PartitionUpdate, error) {
	if err := p.ValidateManifest(); err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	sel, err := p.SelectPartitions(opts.Partitions)
	if err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	for _, pu := range sel {
		name := pu.GetPartitionName()
		if err := p.ValidatePartition(pu, opts.Limits); err != nil {
			return nil, fmt.Errorf("apply: %w", err)
		}
		needSrc := false
		for i, op := range pu.Operations {
			t := op.GetType()
			if !ops.Supported(t) {
				return nil, fmt.Errorf("apply: unsupported op %s in partition %s op %d: %w", t, name, i, ErrUnsupported)
			}
			if ops.NeedsSource(t) {
				needSrc = true
			}
		}
		if needSrc {
			if opts.OldDir == "" {
				return nil, fmt.Errorf("apply: partition %s is a delta: its source image is needed (--old DIR)", name)
			}
			if _, err := os.Stat(filepath.Join(opts.OldDir, name+".img")); err != nil {
				return nil, fmt.Errorf("apply: source of partition %s: %w", name, err)
			}
		}
	}
	return sel, nil
}

// imageSize is new_partition_info.size, or the end of the furthest extent.
func imageSize(pu *metadata.PartitionUpdate, bs int64) int64 { return payload.PartitionSize(pu, bs) }

// opCost estimates the memory an operation holds while it runs.
func opCost(op *metadata.InstallOperation, bs int64) int64 {
	c := int64(op.GetDataLength()) + 1<<20
	switch op.GetType() {
	case metadata.InstallOperation_SOURCE_BSDIFF, metadata.InstallOperation_BROTLI_BSDIFF:
		c += ops.ExtentBytes(op.SrcExtents, bs)
	case metadata.InstallOperation_PUFFDIFF, metadata.InstallOperation_LZ4DIFF_BSDIFF, metadata.InstallOperation_LZ4DIFF_PUFFDIFF:
		// source + puffed source + puffed destination + destination
		c += 4 * (ops.ExtentBytes(op.SrcExtents, bs) + ops.ExtentBytes(op.DstExtents, bs))
	case metadata.InstallOperation_REPLACE_XZ:
		c += 8 << 20 // LZMA2 dictionary
	}
	return c
}

// Extract writes the selected partitions of p into opts.OutDir.
func Extract(ctx context.Context, p *payload.Payload, opts Options) ([]PartitionResult, error) {
	sel, err := Plan(p, opts)
	if err != nil {
		return nil, err
	}
	if opts.OutDir == "" {
		opts.OutDir = "."
	}
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return nil, err
	}
	threads := opts.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	limit := opts.MemoryLimit
	if limit <= 0 {
		limit = 512 << 20
	}
	bs := p.BlockSize()

	jobs := make([]*partJob, 0, len(sel))
	cleanup := func() {
		for _, j := range jobs {
			if j.tmp != nil {
				j.tmp.Close()
				os.Remove(j.tmp.Name())
			}
			if j.src != nil {
				j.src.Close()
			}
		}
	}
	var total int64
	for _, pu := range sel {
		name := pu.GetPartitionName()
		j := &partJob{pu: pu, final: filepath.Join(opts.OutDir, name+".img"), size: imageSize(pu, bs)}
		jobs = append(jobs, j)
		j.tmp, err = os.CreateTemp(opts.OutDir, "."+name+".img.tmp-*")
		if err != nil {
			cleanup()
			return nil, err
		}
		if err := j.tmp.Truncate(j.size); err != nil {
			cleanup()
			return nil, fmt.Errorf("apply: sizing %s: %w", name, err)
		}
		if opts.OldDir != "" {
			if f, err := os.Open(filepath.Join(opts.OldDir, name+".img")); err == nil {
				j.src = f
				if st, err := f.Stat(); err == nil {
					j.srcSize = st.Size()
				}
			}
		}
		j.remaining.Store(int64(len(pu.Operations)))
		for _, op := range pu.Operations {
			total += ops.ExtentBytes(op.DstExtents, bs)
		}
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	for _, j := range jobs {
		if !regeneratesVerity(j.pu) {
			j.ph = newPrefixHasher(ctx, j.tmp, j.pu, bs, j.size)
		}
	}
	type task struct {
		j    *partJob
		i    int
		cost int64
	}
	tasks := make(chan task)
	mem := ops.NewBudget(limit)
	var done atomic.Int64
	var wg sync.WaitGroup
	finish := func(j *partJob) {
		if err := finishPartition(ctx, j, bs); err != nil {
			cancel(err)
		}
	}
	for range threads {
		wg.Go(func() {
			for t := range tasks {
				op := t.j.pu.Operations[t.i]
				err := runOp(ctx, p, op, t.j, bs)
				mem.Release(t.cost)
				if err != nil {
					cancel(&payload.OpError{Partition: t.j.pu.GetPartitionName(), Index: t.i, Type: op.GetType(), Err: err})
					continue
				}
				if t.j.ph != nil {
					t.j.ph.finish(t.i)
				}
				if opts.Progress != nil {
					opts.Progress(done.Add(ops.ExtentBytes(op.DstExtents, bs)), total)
				}
				if t.j.remaining.Add(-1) == 0 {
					finish(t.j)
				}
			}
		})
	}
	// Partitions without operations are finished right away.
	for _, j := range jobs {
		if len(j.pu.Operations) == 0 {
			finish(j)
		}
	}
feed:
	for _, j := range jobs {
		for i, op := range j.pu.Operations {
			c := min(opCost(op, bs), limit)
			if !mem.Acquire(ctx, c) {
				break feed
			}
			select {
			case tasks <- task{j, i, c}:
			case <-ctx.Done():
				mem.Release(c)
				break feed
			}
		}
	}
	close(tasks)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		cleanup()
		return nil, err
	}
	var res []PartitionResult
	for _, j := range jobs {
		res = append(res, j.res)
		if j.src != nil {
			j.src.Close()
		}
	}
	return res, nil
}

func runOp(ctx context.Context, p *payload.Payload, op *metadata.InstallOperation, j *partJob, bs int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	blob, release, err := readBlob(p, op)
	if err != nil {
		return err
	}
	defer release()
	env := ops.Env{BlockSize: bs, Target: ops.ContextWriterAt(ctx, j.tmp), TargetZeroed: true}
	if j.src != nil {
		env.Source, env.SourceSize = ops.ContextReaderAt(ctx, j.src), j.srcSize
	}
	return ops.Execute(op, blob, env)
}

// blobPool keeps op blob buffers: a full payload is thousands of ~1 MiB
// REPLACE_XZ blobs, each otherwise a fresh allocation for the GC.
var blobPool sync.Pool

// maxPooledBlob bounds the buffers kept in blobPool.
const maxPooledBlob = 8 << 20

// readBlob reads op's data into a pooled buffer; release returns it once
// the op is done with it.
func readBlob(p *payload.Payload, op *metadata.InstallOperation) ([]byte, func(), error) {
	n := op.GetDataLength()
	if n == 0 || n > maxPooledBlob {
		b, err := p.Blob(op)
		return b, func() {}, err
	}
	bp, _ := blobPool.Get().(*[]byte)
	if bp == nil || uint64(cap(*bp)) < n {
		b := make([]byte, max(n, 1<<20))
		bp = &b
	}
	b := (*bp)[:n]
	if _, err := io.ReadFull(p.BlobReader(op), b); err != nil {
		blobPool.Put(bp)
		return nil, nil, fmt.Errorf("reading %d-byte blob at data_offset %d: %w", n, op.GetDataOffset(), err)
	}
	return b, func() { blobPool.Put(bp) }, nil
}

func ext(e *metadata.Extent) verity.Extent {
	return verity.Extent{Start: e.GetStartBlock(), Num: e.GetNumBlocks()}
}

// finishPartition regenerates verity data, checks the hash, and renames the
// temporary file into place.
func finishPartition(ctx context.Context, j *partJob, bs int64) error {
	pu := j.pu
	name := pu.GetPartitionName()
	// Verity, FEC and the final hash read the whole image: stop them when
	// ctx ends.
	img := verity.WithContext(ctx, j.tmp)
	if pu.HashTreeExtent != nil && pu.HashTreeDataExtent != nil && pu.HashTreeExtent.GetNumBlocks() > 0 { // regeneratesVerity
		if _, err := verity.BuildHashTree(img, bs, pu.GetHashTreeAlgorithm(), pu.HashTreeSalt, ext(pu.HashTreeDataExtent), ext(pu.HashTreeExtent)); err != nil {
			return fmt.Errorf("partition %s: %w", name, err)
		}
		j.res.Verity = true
	}
	if pu.FecExtent != nil && pu.FecDataExtent != nil && pu.FecExtent.GetNumBlocks() > 0 {
		if err := verity.EncodeFEC(img, bs, int(pu.GetFecRoots()), ext(pu.FecDataExtent), ext(pu.FecExtent)); err != nil {
			return fmt.Errorf("partition %s: %w", name, err)
		}
		j.res.Verity = true
	}
	// Operations may reach past new_partition_info.size; like ota_extractor,
	// the image is cut to that size.
	if st, err := j.tmp.Stat(); err == nil && st.Size() > j.size {
		if err := j.tmp.Truncate(j.size); err != nil {
			return err
		}
	}
	var sum []byte
	if j.ph != nil {
		var err error
		if sum, err = j.ph.sum(); err != nil {
			return fmt.Errorf("partition %s: %w", name, err)
		}
	} else {
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(img, 0, j.size)); err != nil {
			return fmt.Errorf("partition %s: hashing image: %w", name, err)
		}
		sum = h.Sum(nil)
	}
	if want := pu.GetNewPartitionInfo().GetHash(); want != nil {
		if !bytes.Equal(sum, want) {
			return fmt.Errorf("partition %s: new_partition_info.hash %x, image hashes to %x: %w", name, want, sum, ErrVerify)
		}
		j.res.Verified = true
	}
	if err := j.tmp.Sync(); err != nil {
		return err
	}
	if err := j.tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(j.tmp.Name(), j.final); err != nil {
		return err
	}
	j.tmp = nil
	j.res.Name, j.res.Path, j.res.Size, j.res.SHA256 = name, j.final, j.size, fmt.Sprintf("%x", sum)
	return nil
}
