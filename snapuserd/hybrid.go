package snapuserd

// Hybrid table planning (the fuse-iomap idea applied to snapshots): blocks
// whose served content the kernel can produce on its own are given to
// dm-linear / dm-zero segments of the partition's table, and only the rest
// goes through dm-user to the daemon. AOSP always maps the whole partition
// as one dm-user target; the hybrid table is this project's extension and
// is off unless the table builder asks for it (init/stack Builder.Hybrid).
//
// What a block may be, by phase (HybridPhase):
//
//   - SegBase, the base device at the same sector: blocks the COW does not
//     map (no merge step ever writes them), and blocks of ops the merge had
//     committed when the plan was made (step < num_merge_ops: the base
//     block holds the target data, fsynced before the commit, and no later
//     step writes that block again: ops never overlap, NewSnapshot checks).
//     Valid in both phases.
//   - SegZero: blocks of Zero ops. Their content is zeros before, during
//     and after the merge, whatever the merge writes to the base. Both
//     phases.
//   - SegSource, the source device at the op's source block: Copy ops not
//     merged and without a read-ahead copy in the scratch region. This is
//     exactly the daemon's own rule for them (readBlock): it relies on the
//     source block being intact. That holds only while no merge writes the
//     base device (in the in-place layout the source is the base), so
//     SegSource segments exist only in the HybridIdle phase.
//   - SegUser: everything else (Replace, Xor, Copy during the merge or in
//     scratch, the tail shorter than a block).
//
// THE INVARIANT the table builder must keep: a table planned for
// HybridIdle is live only while no merge can write the base device, i.e.
// it is replaced (suspend/load/resume) by a HybridMerging table before
// initiate_merge is sent — both for a fresh merge and for a merge resumed
// after a reboot (a mid-merge reboot is idle until initiate_merge: the
// daemon itself serves unmerged Copy ops from their sources then). A
// HybridMerging table may be re-planned at any time during the merge
// (num_merge_ops only grows, and it is committed only after the merged
// blocks were fsynced to the base), which moves committed blocks from the
// daemon to the base device; after the merge completes the partition is
// collapsed to plain dm-linear over the base as AOSP does.
//
// Writes: the daemon refuses writes to a snapshot (WriteSectors), while a
// dm-linear segment would pass them to the base or source device and
// corrupt data other blocks are built from, so a hybrid table must be
// loaded read-only.

import (
	"fmt"
	"os"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/kernel/dm"
)

// SegmentKind says who serves a segment of a hybrid table.
type SegmentKind uint8

const (
	SegUser   SegmentKind = iota // the daemon, over dm-user
	SegBase                      // dm-linear onto the base device, same sector
	SegSource                    // dm-linear onto the source device at Segment.Source
	SegZero                      // dm-zero
)

func (k SegmentKind) String() string {
	switch k {
	case SegUser:
		return "user"
	case SegBase:
		return "base"
	case SegSource:
		return "source"
	case SegZero:
		return "zero"
	}
	return fmt.Sprintf("SegmentKind(%d)", uint8(k))
}

// Segment is a run of the device served one way, in 512-byte sectors like
// a device-mapper table line.
type Segment struct {
	Start, Length uint64 // sectors
	Kind          SegmentKind
	Source        uint64 // SegSource: first sector on the source device
}

// HybridPhase selects which segments a plan may use (see the invariant
// above).
type HybridPhase uint8

const (
	// HybridIdle: no merge writes the base device while the table is live
	// (before initiate_merge, including after a reboot mid-merge).
	HybridIdle HybridPhase = iota
	// HybridMerging: a merge may be writing the base device.
	HybridMerging
)

func (p HybridPhase) String() string {
	if p == HybridMerging {
		return "merging"
	}
	return "idle"
}

const sectorsPerBlock = BlockSize / 512

// PlanHybrid returns the HybridMerging plan (safe at any time; see
// PlanHybridPhase).
func (s *Snapshot) PlanHybrid(minBlocks uint64) []Segment {
	return s.PlanHybridPhase(HybridMerging, minBlocks)
}

// PlanHybridPhase returns segments covering the device in order, for a
// table that is live only in the given phase. Kernel-served runs shorter
// than minBlocks blocks (at least 1) are folded into the daemon segments
// around them, to keep the table short; a device tail shorter than a block
// goes to the daemon. The plan always has a daemon segment (the dm-user
// control node the daemon opens at init exists only with one): when
// nothing else needs the daemon, the last block is given to it.
func (s *Snapshot) PlanHybridPhase(phase HybridPhase, minBlocks uint64) []Segment {
	minBlocks = max(minBlocks, 1)
	ops := s.r.Ops()
	total := uint64(s.size) / BlockSize
	var fine []Segment
	add := func(sg Segment) {
		if sg.Length == 0 {
			return
		}
		if k := len(fine); k > 0 {
			p := &fine[k-1]
			if p.Kind == sg.Kind && p.Start+p.Length == sg.Start && (p.Kind != SegSource || p.Source+p.Length == sg.Source) {
				p.Length += sg.Length
				return
			}
		}
		fine = append(fine, sg)
	}
	run := uint64(0) // first block not yet planned
	for _, e := range s.index {
		if e.block >= total {
			break
		}
		n := min(ops[e.op].Blocks(), total-e.block)
		add(Segment{Start: run * sectorsPerBlock, Length: (e.block - run) * sectorsPerBlock, Kind: SegBase})
		sg := Segment{Start: e.block * sectorsPerBlock, Length: n * sectorsPerBlock, Kind: SegUser}
		op := &ops[e.op]
		_, inScratch := s.scratch[e.block]
		switch {
		case uint64(e.step) < s.merged:
			sg.Kind = SegBase
		case op.Type == cow.OpZero:
			sg.Kind = SegZero
		case phase == HybridIdle && op.Type == cow.OpCopy && !inScratch:
			off, _ := s.r.SourceOffset(op)
			sg.Kind, sg.Source = SegSource, off/512
		}
		add(sg)
		run = e.block + n
	}
	add(Segment{Start: run * sectorsPerBlock, Length: (total - run) * sectorsPerBlock, Kind: SegBase})
	add(Segment{Start: total * sectorsPerBlock, Length: uint64(s.size)/512 - total*sectorsPerBlock, Kind: SegUser})

	// Fold short kernel runs into the daemon, then merge neighbouring
	// daemon segments.
	var segs []Segment
	hasUser := false
	for _, sg := range fine {
		if sg.Kind != SegUser && sg.Length < minBlocks*sectorsPerBlock {
			sg.Kind, sg.Source = SegUser, 0
		}
		if sg.Kind == SegUser {
			hasUser = true
			if k := len(segs); k > 0 && segs[k-1].Kind == SegUser {
				segs[k-1].Length += sg.Length
				continue
			}
		}
		segs = append(segs, sg)
	}
	if !hasUser && len(segs) > 0 {
		last := &segs[len(segs)-1]
		cut := min(uint64(sectorsPerBlock), last.Length)
		last.Length -= cut
		u := Segment{Start: last.Start + last.Length, Length: cut, Kind: SegUser}
		if last.Length == 0 {
			segs[len(segs)-1] = u
		} else {
			segs = append(segs, u)
		}
	}
	return segs
}

// HybridTargets turns a plan into device-mapper targets: dm-user segments
// on misc (the daemon is sent device sectors: offset = start), dm-linear
// onto base or source, dm-zero.
func HybridTargets(segs []Segment, misc, base, source string) []dm.Target {
	ts := make([]dm.Target, 0, len(segs))
	for _, sg := range segs {
		switch sg.Kind {
		case SegBase:
			ts = append(ts, dm.Linear(sg.Start, sg.Length, base, sg.Start))
		case SegSource:
			ts = append(ts, dm.Linear(sg.Start, sg.Length, source, sg.Source))
		case SegZero:
			ts = append(ts, dm.Zero(sg.Start, sg.Length))
		default:
			ts = append(ts, dm.User(sg.Start, sg.Length, misc))
		}
	}
	return ts
}

// HybridStats sums a plan's sectors by kind.
func HybridStats(segs []Segment) map[SegmentKind]uint64 {
	m := map[SegmentKind]uint64{}
	for _, sg := range segs {
		m[sg.Kind] += sg.Length
	}
	return m
}

// PlanHybridFile reads the COW at cowPath (its header as committed now:
// num_merge_ops and the read-ahead state) and plans the hybrid table of a
// partition of the given size in sectors, with at most HybridMaxSegments
// segments.
func PlanHybridFile(cowPath string, sectors uint64, phase HybridPhase, minBlocks uint64) ([]Segment, error) {
	f, err := os.Open(cowPath)
	if err != nil {
		return nil, fmt.Errorf("snapuserd: hybrid table: %w", err)
	}
	defer f.Close()
	size, err := deviceSize(f)
	if err != nil {
		return nil, err
	}
	if sectors == 0 || sectors > 1<<50 {
		return nil, fmt.Errorf("snapuserd: hybrid table for %s: %d sectors", cowPath, sectors)
	}
	// The planner reads only the COW (ops, header, scratch metadata); the
	// source and base devices are never read.
	s, err := NewSnapshot(cowPath, f, size, nil, nil, int64(sectors)*512, cowPath)
	if err != nil {
		return nil, err
	}
	segs := s.PlanHybridPhase(phase, minBlocks)
	for m := max(minBlocks, 1); len(segs) > hybridMaxSegments; {
		m *= 2 // fold more: a fragmented COW must not make a table of millions of targets
		segs = s.PlanHybridPhase(phase, m)
	}
	return segs, nil
}

// HybridMaxSegments bounds the targets of a table PlanHybridFile plans (the minimum
// kernel run is doubled until the plan fits).
const HybridMaxSegments = 4096

var hybridMaxSegments = HybridMaxSegments // tests lower it
