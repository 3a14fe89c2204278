package create

import "fmt"

// Kind says what the COW holds for one target block.
type Kind uint8

const (
	// KindUnchanged: the target block equals the source block at the same
	// offset; no op (the snapshot reads the base device).
	KindUnchanged Kind = iota
	KindZero
	KindCopy
	KindReplace
	KindXor
)

var kindNames = [...]string{"unchanged", "zero", "copy", "replace", "xor"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ordered reports whether ops of this kind read the old image (IsOrderedOp).
func (k Kind) ordered() bool { return k == KindCopy || k == KindXor }

// BlockOp is the decision for one target block.
type BlockOp struct {
	Kind Kind
	// Src is the source block for Copy, the source byte offset for Xor
	// (old_block*block_size + offset), unused otherwise.
	Src uint64
}

// reads appends the source blocks the op reads (an unaligned Xor straddles
// two blocks, as VerifyMergeOps assumes).
func (o BlockOp) reads(blockSize int, dst []uint64) []uint64 {
	switch o.Kind {
	case KindCopy:
		return append(dst, o.Src)
	case KindXor:
		b := o.Src / uint64(blockSize)
		dst = append(dst, b)
		if o.Src%uint64(blockSize) != 0 {
			dst = append(dst, b+1)
		}
		return dst
	}
	return dst
}

// Stats counts target blocks per kind.
type Stats struct {
	Unchanged uint64 `json:"unchanged"`
	Zero      uint64 `json:"zero"`
	Copy      uint64 `json:"copy"`
	Replace   uint64 `json:"replace"`
	Xor       uint64 `json:"xor"`
	// CyclesBroken is how many copies were turned into Replace ops to break
	// dependency cycles (one per cycle).
	CyclesBroken uint64 `json:"cycles_broken"`
}

func (s *Stats) add(k Kind) {
	switch k {
	case KindUnchanged:
		s.Unchanged++
	case KindZero:
		s.Zero++
	case KindCopy:
		s.Copy++
	case KindReplace:
		s.Replace++
	case KindXor:
		s.Xor++
	}
}

// Plan is the full decision for a source/target pair.
type Plan struct {
	BlockSize  int
	SourceSize int64 // bytes
	TargetSize int64 // bytes
	// Blocks has one entry per target block (the last one zero-padded when
	// the target size is not a multiple of the block size).
	Blocks []BlockOp
	// Order is the merge order of the ordered ops (their destination
	// blocks); it becomes the COW's sequence data.
	Order []uint32
	// Broken lists the blocks whose copies were turned into Replace ops.
	Broken []uint32
	Stats  Stats
}

// SourceBlocks is the number of (zero-padded) source blocks.
func (p *Plan) SourceBlocks() uint64 { return blocksOf(p.SourceSize, p.BlockSize) }

// TargetBlocks is the number of (zero-padded) target blocks.
func (p *Plan) TargetBlocks() uint64 { return uint64(len(p.Blocks)) }

func blocksOf(size int64, bs int) uint64 { return uint64((size + int64(bs) - 1) / int64(bs)) }

func (p *Plan) recount() {
	p.Stats = Stats{CyclesBroken: uint64(len(p.Broken))}
	for _, b := range p.Blocks {
		p.Stats.add(b.Kind)
	}
}
