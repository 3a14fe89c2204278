package vabc

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/ops"
	"github.com/vabc-go/vabc/update_engine/payload"
)

// Plan checks that the selected partitions can be written: every operation
// is supported, sources exist and the verity fields are consistent. It fails
// before anything is written.
func Plan(p *payload.Payload, opts Options) ([]*metadata.PartitionUpdate, error) {
	if err := p.ValidateManifest(); err != nil {
		return nil, fmt.Errorf("vabc: %w", err)
	}
	sel, err := p.SelectPartitions(opts.Partitions)
	if err != nil {
		return nil, fmt.Errorf("vabc: %w", err)
	}
	for _, pu := range sel {
		name := pu.GetPartitionName()
		if err := p.ValidatePartition(pu, opts.Limits); err != nil {
			return nil, fmt.Errorf("vabc: %w", err)
		}
		for i, op := range pu.Operations {
			t := op.GetType()
			if !ops.Supported(t) {
				return nil, fmt.Errorf("vabc: unsupported op %s in partition %s op %d: %w", t, name, i, ErrUnsupported)
			}
		}
		if err := checkVerity(pu, p.BlockSize()); err != nil {
			return nil, err
		}
		if needsSource(pu) {
			if opts.OldDir == "" {
				return nil, fmt.Errorf("vabc: partition %s reads the old image: its source is needed (--old DIR)", name)
			}
			if _, err := os.Stat(filepath.Join(opts.OldDir, name+".img")); err != nil {
				return nil, fmt.Errorf("vabc: source of partition %s: %w", name, err)
			}
		}
	}
	return sel, nil
}

func needsSource(pu *metadata.PartitionUpdate) bool {
	for _, op := range pu.Operations {
		if ops.NeedsSource(op.GetType()) {
			return true
		}
	}
	return false
}

// Write writes <partition>.cow for the selected partitions of p into
// opts.OutDir, resuming interrupted runs.
func Write(ctx context.Context, p *payload.Payload, opts Options) ([]Result, error) {
	sel, err := Plan(p, opts)
	if err != nil {
		return nil, err
	}
	st, err := resolve(p, opts)
	if err != nil {
		return nil, err
	}
	if opts.OutDir == "" {
		opts.OutDir = "."
	}
	if opts.Threads <= 0 {
		opts.Threads = runtime.GOMAXPROCS(0)
	}
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return nil, err
	}
	bs := p.BlockSize()
	var total int64
	for _, pu := range sel {
		for _, op := range pu.Operations {
			total += ops.ExtentBytes(op.DstExtents, bs)
		}
	}
	prog := &progress{total: total, fn: opts.Progress}
	var res []Result
	for _, pu := range sel {
		r, err := writePartition(ctx, p, pu, opts, st, prog)
		if err != nil {
			return res, err
		}
		res = append(res, r)
	}
	return res, nil
}

type progress struct {
	done  atomic.Int64
	total int64
	fn    func(done, total int64)
}

func (p *progress) add(n int64) {
	d := p.done.Add(n)
	if p.fn != nil {
		p.fn(d, p.total)
	}
}

// imageSize is new_partition_info.size, or the end of the furthest extent.
func imageSize(pu *metadata.PartitionUpdate, bs int64) int64 { return payload.PartitionSize(pu, bs) }

func writePartition(ctx context.Context, p *payload.Payload, pu *metadata.PartitionUpdate, opts Options, st settings, prog *progress) (Result, error) {
	name := pu.GetPartitionName()
	bs := p.BlockSize()
	pw := &partWriter{p: p, pu: pu, name: name, bs: bs, prog: prog, threds: opts.Threads, skipVerify: opts.SkipVerify}
	pw.res = Result{Name: name, Path: filepath.Join(opts.OutDir, name+".cow"), CowVersion: st.version, Compression: st.comp,
		CompressionFactor: st.factor, Operations: len(pu.Operations)}
	if opts.OldDir != "" && (needsSource(pu) || len(pu.GetMergeOperations()) > 0) {
		f, err := os.Open(filepath.Join(opts.OldDir, name+".img"))
		if err != nil {
			if needsSource(pu) {
				return pw.res, fmt.Errorf("vabc: source of partition %s: %w", name, err)
			}
		} else {
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				return pw.res, err
			}
			sz := fi.Size()
			if fi.Mode()&os.ModeDevice != 0 {
				// A block device (on a device the source partition itself):
				// Stat says 0, its end is its size.
				if sz, err = f.Seek(0, io.SeekEnd); err != nil {
					return pw.res, fmt.Errorf("vabc: size of source %s: %w", f.Name(), err)
				}
			}
			pw.src, pw.srcSz = f, sz
		}
	}
	srcBlocks := uint64(pw.srcSz / bs)
	plan, err := planMerge(pu, bs, srcBlocks, st.xor)
	if err != nil {
		return pw.res, err
	}
	pw.plan = plan
	pw.res.SequenceBlocks = len(plan.seq)
	pw.res.CopyBlocks = len(plan.copies)
	pw.res.DroppedHints = plan.dropped

	size := imageSize(pu, bs)
	wopts := cow.WriterOptions{
		Compression: st.alg, CompressionLevel: st.level, CompressionLevelSet: true,
		CompressionFactor: st.factor,
		MaxBlocks:         uint64((size + bs - 1) / bs),
		OpCountMax:        pu.GetEstimateOpCountMax(),
		Path:              name + ".cow",
	}
	if bs > math.MaxUint32 || bs <= 0 {
		return pw.res, fmt.Errorf("vabc: block size %d", bs)
	}
	wopts.BlockSize = uint32(bs)

	statePath := pw.res.Path + ".state"
	next := uint64(0)
	var f *os.File
	if s, ok := loadState(statePath); ok && s.ID == st.manifestID && s.Partition == name && s.Complete {
		// Finished by an earlier run; skip it if the file is still whole.
		if size, ok := finished(pw.res.Path); ok {
			if s.Verified || pw.skipVerify || len(pu.GetNewPartitionInfo().GetHash()) == 0 {
				pw.res.Size, pw.res.Verified, pw.res.AlreadyComplete = size, s.Verified, true
				pw.res.CopyBlocks = len(plan.copies)
				return pw.res, nil
			}
		}
	}
	if s, ok := loadState(statePath); ok && !s.Complete && s.ID == st.manifestID && s.Partition == name &&
		(s.Label == cow.EndOfInstallLabel || s.Label <= lastOpLabel(pu)) {
		f, err = os.OpenFile(pw.res.Path, os.O_RDWR, 0)
		if err == nil {
			var cf cow.File = f
			if opts.WrapFile != nil {
				cf = opts.WrapFile(f)
			}
			if st.version == 3 {
				pw.w, err = cow.OpenWriterV3(cf, wopts, s.Label)
			} else {
				pw.w, err = cow.OpenWriterV2(cf, wopts, s.Label)
			}
			if err != nil {
				f.Close()
				f = nil
			} else {
				next = s.Label
				l := s.Label
				pw.res.ResumedAt = &l
			}
		}
	}
	if pw.w == nil {
		// Fresh start.
		os.Remove(statePath)
		f, err = os.OpenFile(pw.res.Path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return pw.res, err
		}
		var cf cow.File = f
		if opts.WrapFile != nil {
			cf = opts.WrapFile(f)
		}
		if st.version == 3 {
			pw.w, err = cow.NewWriterV3(cf, wopts)
		} else {
			pw.w, err = cow.NewWriterV2(cf, wopts)
		}
		if err != nil {
			f.Close()
			return pw.res, fmt.Errorf("vabc: partition %s: %w", name, err)
		}
		if err := pw.writeHead(); err != nil {
			pw.w.Close()
			f.Close()
			return pw.res, err
		}
	}
	// The state file is (re)written at the start of every run.
	sf, err := saveState(statePath, state{Partition: name, ID: st.manifestID, Label: next})
	if err != nil {
		pw.w.Close()
		f.Close()
		return pw.res, err
	}
	defer sf.Close()
	err = pw.run(ctx, next, func(label uint64) error {
		return saveLabel(sf, label)
	})
	if err == nil {
		err = pw.w.Finalize()
		if err == nil {
			pw.res.Size = pw.w.Size()
		}
	}
	if cerr := pw.w.Close(); err == nil {
		err = cerr
	}
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return pw.res, err
	}
	if want := pu.GetNewPartitionInfo().GetHash(); !pw.skipVerify && len(want) > 0 {
		if err := pw.verify(ctx, pw.res.Path, size, want); err != nil {
			os.Remove(pw.res.Path)
			os.Remove(statePath)
			return pw.res, err
		}
		pw.res.Verified = true
	}
	sf2, err := saveState(statePath, state{Partition: name, ID: st.manifestID, Label: cow.EndOfInstallLabel, Complete: true, Verified: pw.res.Verified})
	if err != nil {
		return pw.res, err
	}
	sf2.Close()
	return pw.res, nil
}

// finished reports whether the COW at path parses whole and ends with the
// end-of-install label, and returns its size. v2: the last Label op is that
// label. v3 has no "last label" (AOSP reports none; the newest resume slot
// may be stale): the file is opened at the label, whose resume point must
// cover every op.
func finished(path string) (int64, bool) {
	r, err := cow.Open(path, nil)
	if err != nil {
		return 0, false
	}
	size, all, v3 := r.Size(), len(r.Ops()), r.Header().MajorVersion >= 3
	l, ok := r.LastLabel()
	r.Close()
	if !v3 {
		return size, ok && l == cow.EndOfInstallLabel
	}
	end := uint64(cow.EndOfInstallLabel)
	r, err = cow.Open(path, &cow.ReaderOptions{Label: &end})
	if err != nil {
		return 0, false
	}
	defer r.Close()
	return size, len(r.Ops()) == all
}

// writeHead writes the sequence, the up-front Copy ops and Label(0).
func (pw *partWriter) writeHead() error {
	wrap := func(err error) error { return fmt.Errorf("vabc: partition %s: %w", pw.name, err) }
	if len(pw.plan.seq) > 0 {
		if err := pw.w.AddSequenceData(pw.plan.seq); err != nil {
			return wrap(err)
		}
	}
	for _, c := range pw.plan.copies {
		if err := pw.w.AddCopy(c[0], c[1], 1); err != nil {
			return wrap(err)
		}
	}
	pw.res.CopyBlocks = len(pw.plan.copies)
	if err := pw.w.AddLabel(0); err != nil {
		return wrap(err)
	}
	return nil
}
