package generate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"hash/crc64"
	"sort"
	"sync"

	"github.com/vabc-go/vabc/update_engine/bsdiff"
	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/puffin"
	"google.golang.org/protobuf/proto"
)

// block classes of an incremental partition
const (
	clChanged = iota
	clCopy
	clZero
	clClaimed // written by an LZ4DIFF operation
)

// xorMap maps one destination block to a source byte position (COW_XOR).
type xorMap struct {
	dst       uint64
	src       uint64 // source block
	srcOffset uint32 // byte offset within it, [0, block size)
}

// unit is one operation of a partition: either fixed at planning time
// (SOURCE_COPY, ZERO) or computed by a worker (REPLACE*/diff).
type unit struct {
	op   *metadata.InstallOperation
	blob []byte

	// set for worker units
	dstStart, dstBlocks int
	windows             [][2]int // candidate source windows [start, end) in blocks
	xor                 []xorMap // COW_XOR hints of the chosen diff
	err                 error
}

type partPlan struct {
	p        Partition
	units    []*unit
	copyMap  [][2]uint64 // (dst, src) pairs of SOURCE_COPY blocks with dst != src
	identity int         // SOURCE_COPY blocks with dst == src
}

func ext(start, n int) *metadata.Extent {
	return &metadata.Extent{StartBlock: proto.Uint64(uint64(start)), NumBlocks: proto.Uint64(uint64(n))}
}

func opOf(t metadata.InstallOperation_Type) *metadata.InstallOperation {
	return &metadata.InstallOperation{Type: t.Enum()}
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// minZeroRun is the shortest zero run a full payload turns into a ZERO
// operation; shorter runs stay inside the surrounding REPLACE chunk, where
// they compress to almost nothing.
const minZeroRun = 4

func (c *Config) planFull(p Partition) *partPlan {
	bs := c.BlockSize
	nb := len(p.New) / bs
	chunk := c.ChunkSize / bs
	pp := &partPlan{p: p}
	zeroRunAt := func(i int) int {
		n := 0
		for i+n < nb && isZero(p.New[(i+n)*bs:(i+n+1)*bs]) {
			n++
		}
		return n
	}
	for i := 0; i < nb; {
		if z := zeroRunAt(i); z >= minZeroRun {
			for z > 0 {
				n := min(z, chunk*64)
				u := &unit{op: opOf(metadata.InstallOperation_ZERO)}
				u.op.DstExtents = []*metadata.Extent{ext(i, n)}
				pp.units = append(pp.units, u)
				i += n
				z -= n
			}
			continue
		}
		start := i
		for i < nb && i-start < chunk {
			if z := zeroRunAt(i); z >= minZeroRun {
				break
			} else if z > 0 {
				i += min(z, chunk-(i-start))
				continue
			}
			i++
		}
		pp.units = append(pp.units, &unit{dstStart: start, dstBlocks: i - start})
	}
	return pp
}

// blockIndex finds source blocks by content.
type blockIndex struct {
	m map[uint64][]int32
}

var crcTable = crc64.MakeTable(crc64.ECMA)

const maxSameHash = 4

func newBlockIndex(old []byte, bs int) *blockIndex {
	x := &blockIndex{m: map[uint64][]int32{}}
	for j := 0; j < len(old)/bs; j++ {
		h := crc64.Checksum(old[j*bs:(j+1)*bs], crcTable)
		if l := x.m[h]; len(l) < maxSameHash {
			x.m[h] = append(l, int32(j))
		}
	}
	return x
}

// find returns the lowest indexed source block equal to b, or -1. The hash
// is fixed (CRC-64), so the choice depends on content alone.
func (x *blockIndex) find(old, b []byte, bs int) int {
	for _, j := range x.m[crc64.Checksum(b, crcTable)] {
		if bytes.Equal(old[int(j)*bs:(int(j)+1)*bs], b) {
			return int(j)
		}
	}
	return -1
}

// planDelta plans the first nb blocks of p.New (the rest, verity hash tree
// and FEC, is left to the client).
func (c *Config) planDelta(p Partition, nb int) *partPlan {
	bs := c.BlockSize
	ob := len(p.Old) / bs
	chunk := c.ChunkSize / bs
	zeroOK := c.MinorVersion >= zeroAndBrotliMinor
	idx := newBlockIndex(p.Old, bs)
	class := make([]uint8, nb)
	src := make([]int, nb)
	for i := 0; i < nb; i++ {
		b := p.New[i*bs : (i+1)*bs]
		switch {
		case i < ob && bytes.Equal(p.Old[i*bs:(i+1)*bs], b):
			class[i], src[i] = clCopy, i
		case zeroOK && isZero(b):
			class[i] = clZero
		case i > 0 && class[i-1] == clCopy && src[i-1]+1 < ob && bytes.Equal(p.Old[(src[i-1]+1)*bs:(src[i-1]+2)*bs], b):
			class[i], src[i] = clCopy, src[i-1]+1
		default:
			if j := idx.find(p.Old, b, bs); j >= 0 {
				class[i], src[i] = clCopy, j
			}
		}
	}
	var lz4Units []*unit
	if c.lz4diffOK() {
		var claimed []bool
		if lz4Units, claimed = c.planLZ4Diff(p, nb, class); claimed != nil {
			for i, cl := range claimed {
				if cl {
					class[i] = clClaimed
				}
			}
		}
	}
	pp := &partPlan{p: p}
	for i := 0; i < nb; {
		start := i
		cl := class[i]
		limit := chunk
		if cl == clZero {
			limit = chunk * 64
		}
		for i < nb && class[i] == cl && i-start < limit {
			i++
		}
		n := i - start
		switch cl {
		case clClaimed:
		case clZero:
			u := &unit{op: opOf(metadata.InstallOperation_ZERO)}
			u.op.DstExtents = []*metadata.Extent{ext(start, n)}
			pp.units = append(pp.units, u)
		case clCopy:
			u := &unit{op: opOf(metadata.InstallOperation_SOURCE_COPY)}
			u.op.DstExtents = []*metadata.Extent{ext(start, n)}
			var srcData []byte
			for k := start; k < i; k++ {
				s := src[k]
				if l := len(u.op.SrcExtents); l > 0 && int(u.op.SrcExtents[l-1].GetStartBlock()+u.op.SrcExtents[l-1].GetNumBlocks()) == s {
					*u.op.SrcExtents[l-1].NumBlocks++
				} else {
					u.op.SrcExtents = append(u.op.SrcExtents, ext(s, 1))
				}
				if s == k {
					pp.identity++
				} else {
					pp.copyMap = append(pp.copyMap, [2]uint64{uint64(k), uint64(s)})
				}
				srcData = append(srcData, p.Old[s*bs:(s+1)*bs]...)
			}
			if c.MinorVersion >= srcHashMinor {
				h := sha256.Sum256(srcData)
				u.op.SrcSha256Hash = h[:]
			}
			pp.units = append(pp.units, u)
		default:
			u := &unit{dstStart: start, dstBlocks: n}
			if !c.DisableDiff && ob > 0 {
				margin := 16 + n/4
				starts := []int{start}
				if start > 0 && class[start-1] == clCopy {
					starts = append(starts, src[start-1]+1)
				}
				if i < nb && class[i] == clCopy {
					starts = append(starts, src[i]-n)
				}
				seen := map[[2]int]bool{}
				for _, s := range starts {
					w := [2]int{max(0, s-margin), min(ob, s+n+margin)}
					if w[0] >= w[1] || seen[w] {
						continue
					}
					seen[w] = true
					u.windows = append(u.windows, w)
				}
			}
			pp.units = append(pp.units, u)
		}
	}
	if len(lz4Units) > 0 {
		pp.units = append(pp.units, lz4Units...)
		sort.SliceStable(pp.units, func(a, b int) bool { return unitStart(pp.units[a]) < unitStart(pp.units[b]) })
	}
	return pp
}

// unitStart is the first destination block of a unit.
func unitStart(u *unit) int {
	if u.op != nil && len(u.op.DstExtents) > 0 {
		return int(u.op.DstExtents[0].GetStartBlock())
	}
	return u.dstStart
}

// run computes a worker unit: the best REPLACE, or a bsdiff patch when smaller.
func (c *Config) run(pp *partPlan, u *unit) error {
	bs := c.BlockSize
	data := pp.p.New[u.dstStart*bs : (u.dstStart+u.dstBlocks)*bs]
	typ, blob, err := bestReplace(data, c.Compressions)
	if err != nil {
		return err
	}
	op := opOf(typ)
	op.DstExtents = []*metadata.Extent{ext(u.dstStart, u.dstBlocks)}
	var deflates []puffin.BitExtent
	if c.puffdiffOK() {
		deflates = puffin.Locate(data, bs)
	}
	for _, w := range u.windows {
		old := pp.p.Old[w[0]*bs : w[1]*bs]
		if patch := c.tryPuffdiff(old, data, deflates); patch != nil && len(patch) < len(blob) {
			blob = patch
			op = opOf(metadata.InstallOperation_PUFFDIFF)
			op.DstExtents = []*metadata.Extent{ext(u.dstStart, u.dstBlocks)}
			op.SrcExtents = []*metadata.Extent{ext(w[0], w[1]-w[0])}
			if c.MinorVersion >= srcHashMinor {
				h := sha256.Sum256(old)
				op.SrcSha256Hash = h[:]
			}
			u.xor = nil // update_engine derives COW_XOR from bsdiff ops only
		}
		d := bsdiff.Diff(old, data)
		var patch []byte
		dtyp := metadata.InstallOperation_SOURCE_BSDIFF
		if c.MinorVersion >= zeroAndBrotliMinor {
			patch, _, err = d.EncodeSmallest(true, c.BrotliQuality)
			dtyp = metadata.InstallOperation_BROTLI_BSDIFF
		} else {
			patch, err = d.Encode(bsdiff.Format{Legacy: true})
		}
		if err != nil {
			return err
		}
		if len(patch) >= len(blob) {
			continue
		}
		blob = patch
		op = opOf(dtyp)
		op.DstExtents = []*metadata.Extent{ext(u.dstStart, u.dstBlocks)}
		op.SrcExtents = []*metadata.Extent{ext(w[0], w[1]-w[0])}
		if c.MinorVersion >= srcHashMinor {
			h := sha256.Sum256(old)
			op.SrcSha256Hash = h[:]
		}
		u.xor = nil
		if c.VABC != nil && c.VABC.XOR {
			u.xor = xorFromDelta(d, u.dstStart, w[0], len(pp.p.Old), bs)
		}
	}
	u.op, u.blob = op, blob
	return nil
}

// xorFromDelta derives COW_XOR hints from a bsdiff control stream (what
// update_engine's PopulateXorOps does): every destination block covered at
// least half by a diff run maps to the source bytes that run was diffed
// against. winStart is the source window's first block.
func xorFromDelta(d *bsdiff.Delta, dstStart, winStart, oldLen, bs int) []xorMap {
	var out []xorMap
	var newPos, oldPos int64
	for _, c := range d.Ctrl {
		if c.Diff > 0 && oldPos >= 0 {
			end := newPos + c.Diff
			first := (newPos + int64(bs) - 1) / int64(bs) * int64(bs)
			for nbStart := first; nbStart+int64(bs)/2 <= end && nbStart+int64(bs) <= d.NewSize; nbStart += int64(bs) {
				abs := int64(winStart*bs) + oldPos + (nbStart - newPos)
				if abs < 0 || abs+int64(bs) > int64(oldLen) {
					continue
				}
				out = append(out, xorMap{
					dst:       uint64(dstStart) + uint64(nbStart/int64(bs)),
					src:       uint64(abs / int64(bs)),
					srcOffset: uint32(abs % int64(bs)),
				})
			}
		}
		newPos += c.Diff + c.Extra
		oldPos += c.Diff + c.Seek
	}
	return out
}

// runUnits computes all worker units of all partitions on c.Threads
// goroutines. Results land in the units themselves, so scheduling order does
// not affect the output.
func (c *Config) runUnits(ctx context.Context, plans []*partPlan) error {
	type work struct {
		pp *partPlan
		u  *unit
	}
	var todo []work
	for _, pp := range plans {
		for _, u := range pp.units {
			if u.op == nil {
				todo = append(todo, work{pp, u})
			}
		}
	}
	ch := make(chan work)
	var wg sync.WaitGroup
	for t := 0; t < c.Threads; t++ {
		wg.Go(func() {
			for w := range ch {
				if err := ctx.Err(); err != nil {
					w.u.err = err
					continue
				}
				if err := c.run(w.pp, w.u); err != nil {
					w.u.err = fmt.Errorf("generate: partition %s, blocks %d+%d: %w", w.pp.p.Name, w.u.dstStart, w.u.dstBlocks, err)
				}
			}
		})
	}
	for _, w := range todo {
		ch <- w
	}
	close(ch)
	wg.Wait()
	for _, w := range todo {
		if w.u.err != nil {
			return w.u.err
		}
	}
	return ctx.Err()
}
