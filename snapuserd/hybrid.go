package snapuserd

// Hybrid table planning (the fuse-iomap idea applied to snapshots): blocks
// whose served content is the base device's block at the same offset can be
// served by the kernel (a dm-linear segment of the partition's table) instead
// of a round trip through the daemon. Two kinds of blocks qualify, and stay
// correct before, during and after the merge without a reload:
//   - blocks the COW does not map: the merge never writes them;
//   - blocks of ops the merge had committed when the COW was opened
//     (step < num_merge_ops): the base block already holds the target data
//     and no later merge step writes it again.
// Copy ops could also be linear segments onto their source blocks before the
// merge starts, but the merge overwrites sources in place, so such segments
// would need a reload to the daemon at merge start; they are left to the
// daemon here.
//
// The planner is not wired into the table that init builds yet.

// Segment is a run of the device served one way, in 512-byte sectors like
// a device-mapper table line.
type Segment struct {
	Start, Length uint64 // sectors
	// Linear: served from the base device at the same sector; otherwise by
	// the daemon.
	Linear bool
}

const sectorsPerBlock = BlockSize / 512

// PlanHybrid returns segments covering the device in order. Linear runs
// shorter than minBlocks blocks (at least 1) are folded into the daemon
// segments around them, to keep the table short; a device tail shorter than
// a block goes to the daemon.
func (s *Snapshot) PlanHybrid(minBlocks uint64) []Segment {
	minBlocks = max(minBlocks, 1)
	ops := s.r.Ops()
	total := uint64(s.size) / BlockSize
	var segs []Segment
	add := func(start, length uint64, linear bool) {
		if length == 0 {
			return
		}
		if linear && length < minBlocks*sectorsPerBlock {
			linear = false
		}
		if k := len(segs); k > 0 && segs[k-1].Linear == linear {
			segs[k-1].Length += length
			return
		}
		segs = append(segs, Segment{Start: start, Length: length, Linear: linear})
	}
	// Walk the sorted index: gaps between entries and merged entries extend
	// the pending linear run that starts at block run.
	run := uint64(0)
	for _, e := range s.index {
		if e.block >= total {
			break
		}
		if uint64(e.step) < s.merged {
			continue
		}
		n := min(ops[e.op].Blocks(), total-e.block)
		add(run*sectorsPerBlock, (e.block-run)*sectorsPerBlock, true)
		add(e.block*sectorsPerBlock, n*sectorsPerBlock, false)
		run = e.block + n
	}
	add(run*sectorsPerBlock, (total-run)*sectorsPerBlock, true)
	add(total*sectorsPerBlock, uint64(s.size)/512-total*sectorsPerBlock, false)
	return segs
}
