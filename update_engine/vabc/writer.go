package vabc

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/ops"
	"github.com/vabc-go/vabc/update_engine/payload"
)

// ErrUnsupported marks payloads this package cannot turn into COW files.
var ErrUnsupported = errors.New("vabc: unsupported")

// Options configure Write. Zero values take the manifest's settings.
type Options struct {
	OutDir     string   // where <partition>.cow is written
	OldDir     string   // where the source <partition>.img are (delta payloads)
	Partitions []string // subset; empty means all
	// CowVersion overrides dynamic_partition_metadata.cow_version (2 or 3;
	// 0 = manifest, default 2).
	CowVersion uint32
	// Compression overrides vabc_compression_param ("lz4", "gz,9", "none";
	// "" = manifest, default none).
	Compression string
	// CompressionFactor overrides compression_factor (v3 only; 0 = manifest,
	// default 4 KiB).
	CompressionFactor uint64
	// DisableXOR ignores COW_XOR merge ops (update_engine without
	// ro.virtual_ab.compression.xor.enabled writes diff output as Replace
	// ops). XOR is also off when the compression is none, as update_engine.
	DisableXOR bool
	// Threads computes the new data of that many operations at once
	// (<= 0: GOMAXPROCS). Output does not depend on it.
	Threads int
	// Progress, if set, is called with destination bytes done and the total.
	Progress func(done, total int64)
	// SkipVerify skips the final check: the snapshot view (old image + COW,
	// as snapuserd serves it) must hash to new_partition_info.hash, and the
	// merge order must pass VerifyMergeOps. A COW that fails is removed.
	SkipVerify bool
	// WrapFile, if set, wraps each COW file before the writer sees it
	// (fault injection in tests).
	WrapFile func(cow.File) cow.File
}

// Result describes one written COW file.
type Result struct {
	Name              string  `json:"name"`
	Path              string  `json:"path"`
	Size              int64   `json:"size"`
	Verified          bool    `json:"verified"` // snapshot view matched new_partition_info.hash
	CowVersion        uint32  `json:"cow_version"`
	Compression       string  `json:"compression"`
	CompressionFactor uint32  `json:"compression_factor,omitempty"`
	Operations        int     `json:"operations"`
	ResumedAt         *uint64 `json:"resumed_at_label,omitempty"`
	AlreadyComplete   bool    `json:"already_complete,omitempty"` // finished by an earlier run, skipped
	SequenceBlocks    int     `json:"sequence_blocks"`
	CopyBlocks        int     `json:"copy_blocks"`
	XorBlocks         int     `json:"xor_blocks"`
	ReplaceBlocks     int     `json:"replace_blocks"`
	ZeroBlocks        int     `json:"zero_blocks"`
	DroppedHints      int     `json:"dropped_merge_hint_blocks,omitempty"`
}

// settings are the resolved writer settings of one payload.
type settings struct {
	version    uint32
	comp       string
	alg        cow.Compression
	level      int
	factor     uint32
	xor        bool
	manifestID string
}

func resolve(p *payload.Payload, opts Options) (settings, error) {
	dpm := p.Manifest.GetDynamicPartitionMetadata()
	s := settings{version: dpm.GetCowVersion(), comp: dpm.GetVabcCompressionParam()}
	if opts.CowVersion != 0 {
		s.version = opts.CowVersion
	}
	if s.version == 0 {
		s.version = 2
	}
	if s.version != 2 && s.version != 3 {
		return s, fmt.Errorf("vabc: COW version %d: only 2 and 3 are supported", s.version)
	}
	if opts.Compression != "" {
		s.comp = opts.Compression
	}
	if s.comp == "" {
		s.comp = "none"
	}
	alg, level, err := cow.ParseCompressionOption(s.comp)
	if err != nil {
		return s, fmt.Errorf("vabc: compression %q: %w", s.comp, err)
	}
	s.alg, s.level = alg, level
	f := dpm.GetCompressionFactor()
	if opts.CompressionFactor != 0 {
		f = opts.CompressionFactor
	}
	if s.version == 3 && f != 0 {
		if f > cow.MaxCompressionSize || f&(f-1) != 0 || f < uint64(p.BlockSize()) {
			return s, fmt.Errorf("vabc: compression factor %d: want a power of two from the block size to %d", f, cow.MaxCompressionSize)
		}
		s.factor = uint32(f)
	}
	s.xor = !opts.DisableXOR && alg != cow.CompressionNone
	mb, err := p.ManifestBytes()
	if err != nil {
		return s, fmt.Errorf("vabc: reading manifest: %w", err)
	}
	h := sha256.New()
	h.Write(mb)
	fmt.Fprintf(h, "\x00v%d %s f%d x%v", s.version, s.comp, s.factor, s.xor)
	s.manifestID = hex.EncodeToString(h.Sum(nil))
	return s, nil
}

// Plan checks that the selected partitions can be written: every operation
// is supported, sources exist and the verity fields are consistent. It fails
// before anything is written.
func Plan(p *payload.Payload, opts Options) ([]*metadata.PartitionUpdate, error) {
	sel, err := p.SelectPartitions(opts.Partitions)
	if err != nil {
		return nil, fmt.Errorf("vabc: %w", err)
	}
	for _, pu := range sel {
		name := pu.GetPartitionName()
		for i, op := range pu.Operations {
			t := op.GetType()
			if !payload.KnownType(t) {
				return nil, fmt.Errorf("vabc: unknown op type %d in partition %s op %d: %w", int32(t), name, i, ErrUnsupported)
			}
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
func imageSize(pu *metadata.PartitionUpdate, bs int64) int64 {
	if ni := pu.NewPartitionInfo; ni != nil && ni.Size != nil {
		return int64(ni.GetSize())
	}
	var end int64
	for _, op := range pu.Operations {
		for _, e := range op.DstExtents {
			if e.GetStartBlock() != payload.SparseHole {
				end = max(end, int64(e.GetStartBlock()+e.GetNumBlocks())*bs)
			}
		}
	}
	for _, e := range []*metadata.Extent{pu.GetHashTreeExtent(), pu.GetFecExtent()} {
		if e.GetNumBlocks() > 0 && e.GetStartBlock() < math.MaxInt32 && e.GetNumBlocks() < math.MaxInt32 {
			end = max(end, int64(e.GetStartBlock()+e.GetNumBlocks())*bs)
		}
	}
	return end
}

// state is the resume record beside the COW (<partition>.cow.state). The
// file is a 16-byte label record (label u64 LE, its complement) followed by
// JSON. The JSON is written once per run (with rename); after each COW label
// only the record is rewritten in place (one 16-byte pwrite, so the per-label
// cost stays far below the COW's own fsync). A torn record reads as invalid
// and the partition starts over.
type state struct {
	Partition string `json:"partition"`
	ID        string `json:"id"` // manifest + settings
	Label     uint64 `json:"-"`
	// Complete is set once the COW is finalized (and verified, if asked):
	// a rerun skips the partition.
	Complete bool `json:"complete,omitempty"`
	Verified bool `json:"verified,omitempty"`
}

const labelRecordSize = 16

func labelRecord(l uint64) []byte {
	var b [labelRecordSize]byte
	binary.LittleEndian.PutUint64(b[:], l)
	binary.LittleEndian.PutUint64(b[8:], ^l)
	return b[:]
}

func loadState(path string) (state, bool) {
	var s state
	b, err := os.ReadFile(path)
	if err != nil || len(b) < labelRecordSize || json.Unmarshal(b[labelRecordSize:], &s) != nil {
		return s, false
	}
	l := binary.LittleEndian.Uint64(b)
	if binary.LittleEndian.Uint64(b[8:]) != ^l {
		return s, false
	}
	s.Label = l
	return s, true
}

// saveState replaces the state file and returns it open for label updates.
func saveState(path string, s state) (*os.File, error) {
	j, _ := json.Marshal(s)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(labelRecord(s.Label), j...), 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_RDWR, 0)
}

// saveLabel records that label is durable in the COW.
func saveLabel(f *os.File, label uint64) error {
	_, err := f.WriteAt(labelRecord(label), 0)
	return err
}

// partWriter writes one partition's COW.
type partWriter struct {
	p      *payload.Payload
	pu     *metadata.PartitionUpdate
	name   string
	bs     int64
	src    *os.File // nil for full partitions
	srcSz  int64
	plan   *mergePlan
	w      cow.Writer
	res    Result
	prog   *progress
	threds int

	skipVerify bool
}

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
		if r, err := cow.Open(pw.res.Path, nil); err == nil {
			l, ok := r.LastLabel()
			size := r.Size()
			r.Close()
			if ok && l == cow.EndOfInstallLabel && (s.Verified || pw.skipVerify || len(pu.GetNewPartitionInfo().GetHash()) == 0) {
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
		if err := pw.verify(pw.res.Path, size, want); err != nil {
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

// action is one COW write of an install operation.
type action struct {
	kind byte // 'r' replace, 'z' zero, 'x' xor
	dst  uint64
	n    uint64 // blocks (zero)
	data []byte
	src  uint64 // xor source block
	off  uint16 // xor source offset
}

type pending struct {
	done  chan struct{}
	acts  []action
	bytes int64
	err   error
}

// run writes install operations next… and the end label; saved is called
// after each durable label.
func (pw *partWriter) run(ctx context.Context, next uint64, saved func(uint64) error) error {
	opsList := pw.pu.Operations
	if next != cow.EndOfInstallLabel {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		threads := max(pw.threds, 1)
		queue := make(chan *pending, 2*threads)
		go func() {
			defer close(queue)
			sem := make(chan struct{}, threads)
			for i := int(next); i < len(opsList); i++ {
				pd := &pending{done: make(chan struct{})}
				select {
				case queue <- pd:
				case <-ctx.Done():
					return
				}
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					pd.err = ctx.Err()
					close(pd.done)
					return
				}
				go func() {
					defer func() { <-sem }()
					pd.acts, pd.bytes, pd.err = pw.compute(i)
					close(pd.done)
				}()
			}
		}()
		drain := func() {
			cancel()
			for pd := range queue {
				<-pd.done
			}
		}
		for i := int(next); i < len(opsList); i++ {
			pd, ok := <-queue
			if !ok {
				drain()
				return ctx.Err()
			}
			<-pd.done
			if pd.err == nil {
				pd.err = pw.apply(i, pd.acts)
			}
			if pd.err == nil {
				pd.err = pw.w.AddLabel(uint64(i + 1))
				if pd.err == nil {
					pd.err = saved(uint64(i + 1))
				}
			}
			if pd.err != nil {
				drain()
				if errors.Is(pd.err, context.Canceled) || errors.Is(pd.err, context.DeadlineExceeded) {
					return pd.err
				}
				return &payload.OpError{Partition: pw.name, Index: i, Type: opsList[i].GetType(), Err: pd.err}
			}
			pw.prog.add(pd.bytes)
			if err := ctx.Err(); err != nil {
				drain()
				return err
			}
		}
		if n := uint64(len(opsList)); hasVerity(pw.pu) && next <= n {
			// The hash tree and FEC are computed from the snapshot as it
			// stands after the last install op, then written as Replace
			// data with a label of their own (resume point).
			if err := pw.writeVerity(n); err != nil {
				return err
			}
			if err := pw.w.AddLabel(n + 1); err != nil {
				return fmt.Errorf("vabc: partition %s: verity label: %w", pw.name, err)
			}
			if err := saved(n + 1); err != nil {
				return err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := pw.w.AddLabel(cow.EndOfInstallLabel); err != nil {
			return fmt.Errorf("vabc: partition %s: end label: %w", pw.name, err)
		}
		if err := saved(cow.EndOfInstallLabel); err != nil {
			return err
		}
	}
	return nil
}

// apply writes the actions of one operation.
func (pw *partWriter) apply(i int, acts []action) error {
	bs := uint64(pw.bs)
	for _, a := range acts {
		var err error
		switch a.kind {
		case 'r':
			err = pw.w.AddRawBlocks(a.dst, a.data)
			pw.res.ReplaceBlocks += len(a.data) / int(bs)
		case 'z':
			err = pw.w.AddZeroBlocks(a.dst, a.n)
			pw.res.ZeroBlocks += int(a.n)
		case 'x':
			err = pw.w.AddXorBlocks(a.dst, a.data, a.src, a.off)
			pw.res.XorBlocks += len(a.data) / int(bs)
		}
		if errors.Is(err, cow.ErrCapacity) {
			return fmt.Errorf("%w (estimate_op_count_max %d is too small for this partition)", err, pw.pu.GetEstimateOpCountMax())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// memTarget is an io.WriterAt over a byte slice.
type memTarget []byte

func (m memTarget) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, fmt.Errorf("write of %d bytes at %d outside the %d-byte buffer", len(p), off, len(m))
	}
	return copy(m[off:], p), nil
}

// expand lists the blocks of ext in order; holes are payload.SparseHole.
func expand(ext []*metadata.Extent) []uint64 {
	var out []uint64
	for _, e := range ext {
		for k := range e.GetNumBlocks() {
			if e.GetStartBlock() == payload.SparseHole {
				out = append(out, payload.SparseHole)
			} else {
				out = append(out, e.GetStartBlock()+k)
			}
		}
	}
	return out
}

// compute produces the COW actions of operation i: the new data comes from
// ops.Execute run against a buffer laid out as the concatenated destination
// extents.
func (pw *partWriter) compute(i int) ([]action, int64, error) {
	op := pw.pu.Operations[i]
	bs := pw.bs
	total := ops.ExtentBytes(op.DstExtents, bs)
	t := op.GetType()
	if t == metadata.InstallOperation_ZERO || t == metadata.InstallOperation_DISCARD {
		var acts []action
		for _, e := range op.DstExtents {
			if e.GetStartBlock() != payload.SparseHole && e.GetNumBlocks() > 0 {
				acts = append(acts, action{kind: 'z', dst: e.GetStartBlock(), n: e.GetNumBlocks()})
			}
		}
		return acts, total, nil
	}
	if total > ops.MaxDiffSource {
		return nil, 0, fmt.Errorf("destination of %d bytes is too large to buffer", total)
	}
	blob, err := pw.p.Blob(op)
	if err != nil {
		return nil, 0, err
	}
	// Remap the destination onto [0, total) of a buffer; holes stay holes.
	var remap []*metadata.Extent
	var cur uint64
	for _, e := range op.DstExtents {
		if e.GetStartBlock() == payload.SparseHole {
			remap = append(remap, e)
			continue
		}
		start, n := cur, e.GetNumBlocks()
		remap = append(remap, &metadata.Extent{StartBlock: &start, NumBlocks: &n})
		cur += n
	}
	buf := make(memTarget, int64(cur)*bs)
	mop := &metadata.InstallOperation{
		Type: op.Type, DataOffset: op.DataOffset, DataLength: op.DataLength,
		SrcExtents: op.SrcExtents, SrcLength: op.SrcLength, DstExtents: remap, DstLength: op.DstLength,
		DataSha256Hash: op.DataSha256Hash, SrcSha256Hash: op.SrcSha256Hash,
	}
	env := ops.Env{BlockSize: bs, Target: buf, TargetZeroed: true, SourceSize: pw.srcSz}
	if pw.src != nil {
		env.Source = pw.src
	}
	if err := ops.Execute(mop, blob, env); err != nil {
		return nil, 0, err
	}
	dst := expand(op.DstExtents)
	var src []uint64
	if t == metadata.InstallOperation_SOURCE_COPY {
		src = expand(op.SrcExtents)
		if len(src) != len(dst) {
			return nil, 0, fmt.Errorf("%d destination blocks but %d source blocks", len(dst), len(src))
		}
	}
	diff := t == metadata.InstallOperation_SOURCE_BSDIFF || t == metadata.InstallOperation_BROTLI_BSDIFF
	var acts []action
	addRaw := func(d uint64, data []byte) {
		if l := len(acts); l > 0 {
			a := &acts[l-1]
			if a.kind == 'r' && a.dst+uint64(len(a.data))/uint64(bs) == d && sameBacking(a.data, data) {
				a.data = a.data[:len(a.data)+len(data)]
				return
			}
		}
		acts = append(acts, action{kind: 'r', dst: d, data: data})
	}
	pos := int64(0) // offset in buf of the next non-hole block
	for k, d := range dst {
		if d == payload.SparseHole {
			continue
		}
		data := buf[pos : pos+bs : len(buf)]
		pos += bs
		switch {
		case src != nil:
			if src[k] == d || pw.plan.copied[d] {
				continue // in place, or written as a Copy op up front
			}
			addRaw(d, data)
		case diff:
			x, ok := pw.plan.xor[d]
			if !ok {
				addRaw(d, data)
				continue
			}
			xd, srcBlock, off, ok, err := pw.xorData(data, x)
			if err != nil {
				return nil, 0, err
			}
			if !ok {
				addRaw(d, data)
				continue
			}
			acts = append(acts, action{kind: 'x', dst: d, data: xd, src: srcBlock, off: off})
		default:
			addRaw(d, data)
		}
	}
	return acts, total, nil
}

// sameBacking reports whether b directly follows a in memory (both are
// windows of the same buffer).
func sameBacking(a, b []byte) bool {
	if cap(a)-len(a) < len(b) || len(b) == 0 {
		return false
	}
	return &a[:len(a)+1][len(a)] == &b[0]
}

// xorData XORs one new block with the source bytes at x. When the unaligned
// read would pass the end of the source image, the aligned source block is
// used instead (update_engine splits such reads the same way); when even
// that is outside, ok is false and the block is written as Replace data.
func (pw *partWriter) xorData(newBlock []byte, x xorSrc) (out []byte, srcBlock uint64, off uint16, ok bool, err error) {
	bs := pw.bs
	at := int64(x.block)*bs + int64(x.offset)
	if at+bs > pw.srcSz {
		at = int64(x.block) * bs
		x.offset = 0
		if at+bs > pw.srcSz {
			return nil, 0, 0, false, nil
		}
	}
	out = make([]byte, bs)
	if _, err := pw.src.ReadAt(out, at); err != nil && !(errors.Is(err, io.EOF)) {
		return nil, 0, 0, false, fmt.Errorf("reading XOR source at %d: %w", at, err)
	}
	for j := range out {
		out[j] ^= newBlock[j]
	}
	return out, x.block, uint16(x.offset), true, nil
}

// String summarizes a result on one line.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d bytes, COW v%d %s", r.Path, r.Size, r.CowVersion, r.Compression)
	if r.CompressionFactor != 0 {
		fmt.Fprintf(&b, " factor %d", r.CompressionFactor)
	}
	fmt.Fprintf(&b, ", %d ops: copy %d xor %d replace %d zero %d blocks", r.Operations, r.CopyBlocks, r.XorBlocks, r.ReplaceBlocks, r.ZeroBlocks)
	if r.ResumedAt != nil {
		fmt.Fprintf(&b, " (resumed at label %d)", *r.ResumedAt)
	}
	if r.Verified {
		b.WriteString(", hash ok")
	}
	if r.AlreadyComplete {
		b.WriteString(" (complete from an earlier run)")
	}
	return b.String()
}
