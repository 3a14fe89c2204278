package merge

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
)

// State is the on-disk merge state of a COW, as Check decoded it.
type State struct {
	NumMergeOps uint64  `json:"num_merge_ops"`
	TotalOps    uint64  `json:"num_total_data_ops"`
	OrderedOps  int     `json:"num_ordered_ops"`
	Percent     float64 `json:"merge_percent"`
	Complete    bool    `json:"merge_complete"`
	HasScratch  bool    `json:"has_scratch"`
	// ReadAheadState is read_ahead_state (0 not started, 1 in progress, 2
	// done: a window awaits (re)merging from the scratch region).
	ReadAheadState byte `json:"read_ahead_state"`
	// Entries is the ScratchMetadata list (meaningful with state 2).
	Entries []cow.ScratchEntry `json:"scratch_entries,omitempty"`
	// WindowBoundary: num_merge_ops is at a boundary of AOSP's 510-op
	// windows or past the ordered ops (always true for AOSP and this engine
	// with default options).
	WindowBoundary bool `json:"window_boundary"`
}

// NextAction says what a merge started on this state does first, in the
// words of AOSP's recovery rule.
func (s *State) NextAction() string {
	switch {
	case s.Complete:
		return "none: merge complete"
	case s.ReadAheadState == cow.ReadAheadDone:
		return fmt.Sprintf("replay the %d-op window at op %d from the scratch region", len(s.Entries), s.NumMergeOps)
	case s.NumMergeOps < uint64(s.OrderedOps):
		return fmt.Sprintf("read ahead the window at op %d from the source device", s.NumMergeOps)
	default:
		return fmt.Sprintf("merge Replace/Zero ops from op %d", s.NumMergeOps)
	}
}

// readerFile adapts an io.ReaderAt to the read side of faultfs.File.
type readerFile struct {
	io.ReaderAt
	name string
	size int64
}

func (r readerFile) WriteAt([]byte, int64) (int, error) { return 0, errors.New("read-only") }
func (r readerFile) Sync() error                        { return nil }
func (r readerFile) Truncate(int64) error               { return errors.New("read-only") }
func (r readerFile) Size() (int64, error)               { return r.size, nil }
func (r readerFile) Name() string                       { return r.name }
func (r readerFile) Close() error                       { return nil }

// Check validates the merge-state invariants of the COW in r (size bytes,
// named name in errors) against its merge order: num_merge_ops within the
// data ops; read_ahead_state 0, 1 or 2; with state 2, the scratch entries are
// exactly the next ops in merge order from num_merge_ops (at most the scratch
// capacity, terminated, each file_offset a block inside the scratch region
// that overlaps no other entry's) and num_merge_ops is inside the ordered ops. It returns the decoded
// state and every violation found (errors.Is(err, ErrCorrupt)).
func Check(r io.ReaderAt, size int64, name string, src Source) (*State, error) {
	f := readerFile{r, name, size}
	hdr, err := readHeader(f)
	if err != nil {
		return nil, err
	}
	order := src.MergeOrder()
	st := &State{NumMergeOps: hdr.NumMergeOps, TotalOps: uint64(len(order))}
	for st.OrderedOps < len(order) && order[st.OrderedOps].Type.IsOrdered() {
		st.OrderedOps++
	}
	st.Complete = st.NumMergeOps == st.TotalOps
	st.Percent = 100
	if st.TotalOps > 0 {
		st.Percent = float64(st.NumMergeOps) * 100 / float64(st.TotalOps)
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("merge: %s: "+format+": %w", append([]any{name}, append(args, ErrCorrupt)...)...))
	}
	if st.NumMergeOps > st.TotalOps {
		bad("num_merge_ops %d exceeds %d data ops", st.NumMergeOps, st.TotalOps)
	}
	capacity := int64(DefaultWindowBlocks)
	if _, ok := hdr.Scratch(); ok {
		st.HasScratch = true
		sc, err := cow.ReadScratch(r, size, &hdr, order, name)
		if sc != nil {
			capacity = int64(sc.Capacity)
			st.ReadAheadState = sc.State
			st.Entries = sc.Entries
		}
		switch {
		case err == nil:
		case errors.Is(err, cow.ErrCorrupt):
			errs = append(errs, fmt.Errorf("merge: %w: %w", err, ErrCorrupt))
		default:
			return st, fmt.Errorf("merge: %w", err)
		}
	}
	st.WindowBoundary = st.NumMergeOps >= uint64(st.OrderedOps) || capacity > 0 && st.NumMergeOps%uint64(capacity) == 0
	return st, errors.Join(errs...)
}

// MergeFiles merges the COW at cowPath (parsed as src) into the image at
// basePath in place, durably; it is what `cowctl apply --in-place` and tests
// use. It resumes an interrupted merge and returns nil at once if the COW
// is fully merged.
func MergeFiles(ctx context.Context, cowPath, basePath string, src Source, opts *Options) error {
	cf, err := faultfs.Open(cowPath)
	if err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	defer cf.Close()
	bf, err := faultfs.Open(basePath)
	if err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	defer bf.Close()
	e, err := New(cf, bf, src, opts)
	if err != nil {
		return err
	}
	if err := e.Run(ctx); err != nil {
		return err
	}
	if err := bf.Close(); err != nil {
		return fmt.Errorf("merge: closing %s: %w", basePath, err)
	}
	return cf.Close()
}
