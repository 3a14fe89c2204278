package merge

// The merge checkpoints: every durable write of merge state into the COW
// (snapuserd.md §5). persistWindow is ReadAheadIOCompleted (scratch data,
// then read_ahead_state 2); commit is CommitMerge (num_merge_ops, and
// read_ahead_state 1, in one write of the header page).

import (
	"encoding/binary"
	"fmt"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
)

// persistWindow writes the window to the scratch region and marks it Done:
// metadata + data, sync, read_ahead_state = 2, sync (ReadAheadIOCompleted).
func (e *Engine) persistWindow(w *window) error {
	s := e.scratch
	// The metadata area ends where the data area starts; AOSP writes
	// MetadataSize bytes from header_size+1 and then the data, which
	// restores the one overlapping byte. Writing MetadataSize-1 bytes leaves
	// the same image.
	meta := make([]byte, 0, s.MetadataSize-1)
	for k := 0; k < w.n; k++ {
		meta = cow.AppendScratchEntry(meta, cow.ScratchEntry{
			NewBlock:   e.order[w.start+k].NewBlock,
			FileOffset: uint64(s.DataOffset + int64(k)*e.bs),
		})
	}
	meta = meta[:s.MetadataSize-1] // zero terminator and padding
	if err := faultfs.WriteFull(e.cowF, meta, s.MetadataOffset); err != nil {
		return fmt.Errorf("merge: writing scratch metadata: %w", err)
	}
	if err := faultfs.WriteFull(e.cowF, w.buf, s.DataOffset); err != nil {
		return fmt.Errorf("merge: writing scratch data: %w", err)
	}
	if err := syncData(e.cowF); err != nil {
		return fmt.Errorf("merge: syncing scratch region: %w", err)
	}
	if err := faultfs.WriteFull(e.cowF, []byte{cow.ReadAheadDone}, s.StateOffset); err != nil {
		return fmt.Errorf("merge: setting read_ahead_state: %w", err)
	}
	if err := syncData(e.cowF); err != nil {
		return fmt.Errorf("merge: syncing read_ahead_state: %w", err)
	}
	e.page[len(e.page)-1] = cow.ReadAheadDone
	return nil
}

// commit durably records num_merge_ops = merged (and read_ahead_state = 1
// with scratch, in runs with ordered ops) in one write of the header page,
// then syncs the COW (CommitMerge; snapuserd.md §5). Without scratch the
// header alone is written, as AOSP's pwrite of header_size bytes.
func (e *Engine) commit(merged uint64) error {
	binary.LittleEndian.PutUint64(e.page[cow.OffsetNumMergeOps:], merged)
	// As AOSP, the state byte is only touched by a run that has a
	// read-ahead phase (unmerged ordered ops when the handler started);
	// otherwise the page is rewritten with the state byte as found.
	if e.hasScratch && len(e.windows) > 0 {
		e.page[len(e.page)-1] = cow.ReadAheadInProgress
	}
	if err := faultfs.WriteFull(e.cowF, e.page, 0); err != nil {
		return fmt.Errorf("merge: commit num_merge_ops=%d: %w", merged, err)
	}
	if err := syncData(e.cowF); err != nil {
		return fmt.Errorf("merge: commit num_merge_ops=%d: sync %s: %w", merged, e.cowF.Name(), err)
	}
	e.mu.Lock()
	e.merged = merged
	e.mu.Unlock()
	return nil
}

func (e *Engine) checkpoint(c Checkpoint) {
	if e.opts.OnCheckpoint != nil {
		e.opts.OnCheckpoint(c)
	}
}
