// Package cowdiff turns a pair of partition images into COW operations, the
// way AOSP's create_snapshot does on a host (spec §6.2), and applies a COW to
// a base image the way snapuserd's merge does. It backs the demo tool
// (cow/testdata/mkcow) and end-to-end tests; it is not an OTA generator.
package cowdiff

import (
	"crypto/sha256"
	"fmt"

	"github.com/vabc-go/vabc/cow"
)

// Stats counts what Write emitted.
type Stats struct {
	Blocks    int // target blocks
	Unchanged int // same content at the same position: no op
	Copies    int // found elsewhere in the source
	Replaces  int // new data (including copies broken out of cycles)
	Cycles    int // copies turned into replaces to break dependency cycles
	Zeros     int
}

// Write diffs target against source block by block and writes the ops to
// w: sequence data (the copies' safe merge order), the copies in that
// order, Label 0, then Replace runs and Zero runs with a label after each
// group of runs, EndOfInstallLabel, Finalize. Copies are ordered so that
// none reads a block an earlier copy overwrote (the merge is in place);
// copies caught in a dependency cycle become Replace ops.
func Write(w cow.Writer, source, target []byte, bs int, sequence bool) (Stats, error) {
	var st Stats
	if len(target)%bs != 0 || len(source)%bs != 0 {
		return st, fmt.Errorf("cowdiff: image sizes %d and %d are not multiples of the block size %d", len(source), len(target), bs)
	}
	nsrc, ntgt := len(source)/bs, len(target)/bs
	st.Blocks = ntgt
	index := make(map[[32]byte]int, nsrc)
	for b := nsrc - 1; b >= 0; b-- {
		index[sha256.Sum256(source[b*bs:(b+1)*bs])] = b // lowest block wins
	}
	zero := make([]byte, bs)
	zeroSum := sha256.Sum256(zero)
	type cp struct{ t, s int }
	var copies []cp
	kind := make([]byte, ntgt) // 0 unchanged, 'c' copy, 'r' replace, 'z' zero
	for t := range ntgt {
		blk := target[t*bs : (t+1)*bs]
		if t < nsrc && string(blk) == string(source[t*bs:(t+1)*bs]) {
			st.Unchanged++
			continue
		}
		sum := sha256.Sum256(blk)
		switch s, ok := index[sum]; {
		case sum == zeroSum:
			kind[t] = 'z'
		case ok:
			kind[t] = 'c'
			copies = append(copies, cp{t, s})
		default:
			kind[t] = 'r'
		}
	}
	// Copy A (t_A ← s_A) must merge before the copy B that writes s_A.
	writer := map[int]int{} // block → index of the copy writing it
	for i, c := range copies {
		writer[c.t] = i
	}
	indeg := make([]int, len(copies))
	for _, c := range copies {
		if b, ok := writer[c.s]; ok {
			indeg[b]++
		}
	}
	var order []int
	queue := []int{}
	for i := range copies {
		if indeg[i] == 0 {
			queue = append(queue, i)
		}
	}
	for len(queue) > 0 {
		a := queue[0]
		queue = queue[1:]
		order = append(order, a)
		if b, ok := writer[copies[a].s]; ok {
			if indeg[b]--; indeg[b] == 0 {
				queue = append(queue, b)
			}
		}
	}
	done := make([]bool, len(copies))
	for _, i := range order {
		done[i] = true
	}
	for i, c := range copies {
		if !done[i] {
			kind[c.t] = 'r' // cycle: store the data instead
			st.Cycles++
		}
	}
	if sequence && len(order) > 0 {
		seq := make([]uint32, len(order))
		for i, j := range order {
			seq[i] = uint32(copies[j].t)
		}
		if err := w.AddSequenceData(seq); err != nil {
			return st, err
		}
	}
	for _, j := range order {
		if err := w.AddCopy(uint64(copies[j].t), uint64(copies[j].s), 1); err != nil {
			return st, err
		}
		st.Copies++
	}
	if err := w.AddLabel(0); err != nil {
		return st, err
	}
	label := uint64(1)
	for t := 0; t < ntgt; {
		k := kind[t]
		if k != 'r' && k != 'z' {
			t++
			continue
		}
		end := t
		for end < ntgt && kind[end] == k {
			end++
		}
		var err error
		if k == 'r' {
			err = w.AddRawBlocks(uint64(t), target[t*bs:end*bs])
			st.Replaces += end - t
		} else {
			err = w.AddZeroBlocks(uint64(t), uint64(end-t))
			st.Zeros += end - t
		}
		if err != nil {
			return st, err
		}
		if err := w.AddLabel(label); err != nil {
			return st, err
		}
		label++
		t = end
	}
	if err := w.AddLabel(cow.EndOfInstallLabel); err != nil {
		return st, err
	}
	return st, w.Finalize()
}

// Merge applies every data op of r to base in merge order, in place, as
// snapuserd's merge does: Copy and Xor read base as it is at that step, so a
// wrong merge order shows up as wrong bytes. base must cover every block
// the COW names.
func Merge(r *cow.Reader, base []byte) error {
	bs := int(r.Header().BlockSize)
	buf := make([]byte, bs)
	ops := r.MergeOrder()
	for i := range ops {
		op := &ops[i]
		for k := range op.Blocks() {
			t := int(op.NewBlock+k) * bs
			if t+bs > len(base) {
				return fmt.Errorf("cowdiff: merge step %d writes block %d beyond the %d-byte base", i, op.NewBlock+k, len(base))
			}
			switch op.Type {
			case cow.OpCopy:
				s := int(op.Source) * bs
				if s+bs > len(base) {
					return fmt.Errorf("cowdiff: merge step %d reads block %d beyond the base", i, op.Source)
				}
				copy(base[t:t+bs], base[s:s+bs])
			case cow.OpZero:
				clear(base[t : t+bs])
			case cow.OpReplace:
				if _, err := r.ReadData(op, base[t:t+bs], int(k)*bs); err != nil {
					return fmt.Errorf("cowdiff: merge step %d: %w", i, err)
				}
			case cow.OpXor:
				if _, err := r.ReadData(op, buf, 0); err != nil {
					return fmt.Errorf("cowdiff: merge step %d: %w", i, err)
				}
				s := int(op.Source)
				if s+bs > len(base) {
					return fmt.Errorf("cowdiff: merge step %d reads bytes beyond the base", i)
				}
				for j := range buf {
					buf[j] ^= base[s+j]
				}
				copy(base[t:t+bs], buf)
			default:
				return fmt.Errorf("cowdiff: merge step %d: unexpected %v op", i, op.Type)
			}
		}
	}
	return nil
}
