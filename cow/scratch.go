package cow

import (
	"fmt"
	"io"
	"slices"
)

// Scratch is the decoded scratch (read-ahead) region of a COW
// (cow-format.md §5): the BufferState byte and, when it says a window was
// made durable (read_ahead_state 2), that window's ScratchMetadata entries.
//
// ReadScratch is the one decoder of this region: the daemon's read path,
// the merge engine, merge.Check and create.View all accept exactly what it
// accepts.
type Scratch struct {
	Layout ScratchLayout
	// State is BufferState.read_ahead_state (0, 1 or 2).
	State byte
	// Entries are the persisted window's entries when State is
	// ReadAheadDone: merge steps num_merge_ops, num_merge_ops+1, … in
	// order, each with the absolute COW offset of its target block.
	Entries []ScratchEntry
	// Capacity is the most ops a window can hold: the data blocks, and
	// the entries that fit the metadata area with their terminator (510
	// for the 2 MiB region).
	Capacity int
}

// ReadScratch decodes and validates the scratch region of the COW in r
// (size bytes, header h, named path in errors) against its merge order
// (every data op, from index 0; the ordered Copy/Xor prefix first). It
// returns nil, nil when h has no scratch region.
//
// The acceptance rule: the region has room for two entries and one data
// block and lies inside the file; read_ahead_state is 0, 1 or 2; with 2,
// the entry list is terminated by an all-zero entry, holds 1 to Capacity
// entries whose new_blocks are exactly the ordered ops of the merge order
// from num_merge_ops on, and each entry's block of data lies inside the
// scratch region after the entry list and its terminator, overlapping no
// other entry's (AOSP writes the data at header_size + metadata size +
// i*block_size; any such placement is accepted, so that a window persisted
// with a different metadata size is still replayed).
//
// Violations are *FormatError (errors.Is(err, ErrCorrupt)); read errors are
// returned wrapped as they are. On a violation the Scratch decoded so far is
// returned with the error.
func ReadScratch(r io.ReaderAt, size int64, h *Header, order []Op, path string) (*Scratch, error) {
	return readScratch(r, size, h, path, len(order), func(i int) *Op { return &order[i] })
}

// ReadScratch is ReadScratch for the COW file f that r was parsed from
// (r.Size() bytes), checked against r's merge order.
func (r *Reader) ReadScratch(f io.ReaderAt) (*Scratch, error) {
	return readScratch(f, r.size, &r.hdr, r.opts.Path, len(r.mergeIdx), func(i int) *Op { return &r.ops[r.mergeIdx[i]] })
}

func readScratch(r io.ReaderAt, size int64, h *Header, path string, nOps int, opAt func(int) *Op) (*Scratch, error) {
	lay, ok := h.Scratch()
	if !ok {
		return nil, nil
	}
	s := &Scratch{Layout: lay}
	bad := func(off int64, msg string, val any) error {
		return &FormatError{Path: path, Off: off, Op: -1, Msg: msg, Val: val}
	}
	if lay.MetadataSize < 2*ScratchEntrySize || lay.DataBlocks < 1 {
		return s, bad(OffsetBufferSize, "scratch region leaves no room for entries and data: buffer_size", h.BufferSize)
	}
	s.Capacity = int(min(lay.DataBlocks, (lay.MetadataSize-1)/ScratchEntrySize-1))
	end := lay.StateOffset + int64(h.BufferSize)
	if size < end {
		return s, bad(lay.StateOffset, fmt.Sprintf("scratch region [%#x, %#x) ends past the end of the file: size", lay.StateOffset, end), size)
	}
	var st [1]byte
	if err := readAtFull(r, st[:], lay.StateOffset); err != nil {
		return s, fmt.Errorf("cow: %s: reading read_ahead_state at %#x: %w", path, lay.StateOffset, err)
	}
	s.State = st[0]
	switch s.State {
	case ReadAheadNotStarted, ReadAheadInProgress:
		return s, nil
	case ReadAheadDone:
	default:
		return s, bad(lay.StateOffset, "read_ahead_state (want 0, 1 or 2)", s.State)
	}
	raw := make([]byte, lay.MetadataSize-1)
	if err := readAtFull(r, raw, lay.MetadataOffset); err != nil {
		return s, fmt.Errorf("cow: %s: reading scratch metadata at %#x: %w", path, lay.MetadataOffset, err)
	}
	terminated := false
	for off := 0; off+ScratchEntrySize <= len(raw); off += ScratchEntrySize {
		e := DecodeScratchEntry(raw[off:])
		if e == (ScratchEntry{}) {
			terminated = true
			break
		}
		if len(s.Entries) == s.Capacity {
			return s, bad(lay.MetadataOffset+int64(off), fmt.Sprintf("more than %d scratch entries (no terminator)", s.Capacity), nil)
		}
		s.Entries = append(s.Entries, e)
	}
	if !terminated {
		return s, bad(lay.MetadataOffset, "scratch metadata has no terminator", nil)
	}
	if len(s.Entries) == 0 {
		return s, bad(lay.MetadataOffset, "read_ahead_state 2 but no scratch entries", nil)
	}
	nOrdered := 0
	for nOrdered < nOps && opAt(nOrdered).Type.IsOrdered() {
		nOrdered++
	}
	start := h.NumMergeOps
	if start > uint64(nOrdered) || uint64(len(s.Entries)) > uint64(nOrdered)-start {
		return s, bad(OffsetNumMergeOps, fmt.Sprintf("scratch window of %d ops at num_merge_ops %d runs past the %d ordered ops: num_merge_ops",
			len(s.Entries), start, nOrdered), start)
	}
	bs := int64(h.BlockSize)
	lo := lay.MetadataOffset + int64(len(s.Entries)+1)*ScratchEntrySize
	offs := make([]int64, 0, len(s.Entries))
	for k, e := range s.Entries {
		at := lay.MetadataOffset + int64(k)*ScratchEntrySize
		if want := opAt(int(start) + k).NewBlock; e.NewBlock != want {
			return s, bad(at, fmt.Sprintf("scratch entry %d: merge step %d writes block %d, entry has new_block", k, int(start)+k, want), e.NewBlock)
		}
		if e.FileOffset > uint64(end) || int64(e.FileOffset) < lo || int64(e.FileOffset)+bs > end {
			return s, bad(at, fmt.Sprintf("scratch entry %d: its block is not inside [%#x, %#x) of the scratch region: file_offset", k, lo, end), fmt.Sprintf("%#x", e.FileOffset))
		}
		offs = append(offs, int64(e.FileOffset))
	}
	slices.Sort(offs)
	for i := 1; i < len(offs); i++ {
		if offs[i]-offs[i-1] < bs {
			return s, bad(offs[i], fmt.Sprintf("scratch data blocks at %#x and %#x overlap", offs[i-1], offs[i]), nil)
		}
	}
	return s, nil
}
