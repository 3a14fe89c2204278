package merge

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
)

const bs = cow.DefaultBlockSize

// fakeSource serves a merge order with payloads kept in memory, keyed by
// destination block (every op of a generated image has its own).
type fakeSource struct {
	order   []cow.Op
	payload map[uint64][]byte
}

func (s *fakeSource) MergeOrder() []cow.Op { return s.order }

func (s *fakeSource) ReadData(op *cow.Op, buf []byte, ignore int) (int, error) {
	p, ok := s.payload[op.NewBlock]
	if !ok {
		return 0, fmt.Errorf("no payload for %s", op)
	}
	if ignore > len(p) {
		return 0, fmt.Errorf("ignore %d past payload of %d", ignore, len(p))
	}
	return copy(buf, p[ignore:]), nil
}

// image is a generated merge test case.
type image struct {
	version int
	scratch bool
	base    []byte      // old image (the merge's starting point)
	target  []byte      // what base must become
	src     *fakeSource // the generated ops and payloads
	source  Source      // what the engine merges: src, or a cow.Reader over cowImg
	order   []cow.Op    // source.MergeOrder()
	cowImg  []byte      // header + scratch region + (tail | real ops and data)
	nOrd    int
	// backing, if set, is the separate source device (the old image) the
	// merge reads Copy/Xor sources from; base then holds the old image
	// with garbage in every block the COW writes, resized by a few
	// unmapped blocks (genConfig.backing).
	backing []byte
}

type genConfig struct {
	seed    uint64
	blocks  int
	version int  // 2 or 3 (3 allows multi-block Replace)
	scratch bool // buffer_size 2 MiB, else 0
	// real builds the COW with cow.NewWriterV2/V3 (compression comp) and
	// merges through cow.NewReader instead of the in-memory fake.
	real bool
	comp cow.Compression
	// backing merges from a separate source device (Options.Backing)
	// holding the old image, into a base that differs from it wherever
	// the COW writes and that is larger than it.
	backing bool
	// moves makes about half of the shift segments overlap-free moves (the
	// shift exceeds the segment), so that some windows never overwrite
	// their own sources and are merged without the scratch copy.
	moves bool
}

func fillRandom(rng *rand.Rand, p []byte) {
	for i := 0; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], rng.Uint64())
	}
}

// generate builds a base image and a merge order with heavy overlapping
// copy chains (shift-by-k segments in both directions, whose later ops
// overwrite earlier ops' sources inside a window), XOR ops with unaligned
// sources, copy cycles broken by Replace, multi-block Replace (v3), Zero ops
// and long contiguous Replace runs. The ordered part satisfies AOSP's merge
// order rule (no op reads a block an earlier op wrote); the target is
// computed by applying ops one by one, checking that rule on the way.
func generate(t testing.TB, c genConfig) *image {
	t.Helper()
	rng := rand.New(rand.NewPCG(c.seed, 0xc0ffee))
	nb := c.blocks
	base := make([]byte, nb*bs)
	fillRandom(rng, base)
	img := &image{version: c.version, scratch: c.scratch, base: base}
	src := &fakeSource{payload: map[uint64][]byte{}}
	dest := make([]bool, nb)
	var ordered []cow.Op
	blk := func(p []byte, b uint64) []byte { return p[b*bs : (b+1)*bs] }

	addOrdered := func(d, s uint64, xor bool) {
		op := cow.Op{Type: cow.OpCopy, NewBlock: d, Source: s}
		if xor {
			off := uint64(rng.IntN(bs))
			if rng.IntN(4) == 0 {
				off = 0
			}
			op = cow.Op{Type: cow.OpXor, NewBlock: d, Source: s*bs + off, DataLength: bs}
			if s*bs+off+bs > uint64(nb*bs) {
				op.Source = s * bs
			}
		}
		dest[d] = true
		ordered = append(ordered, op)
	}
	// Shift segments over the first ~60% of the device.
	pos := 0
	limit := nb * 6 / 10
	for {
		segLen := 40 + rng.IntN(600)
		k := 1 + rng.IntN(6)
		if room := limit - pos - k - 2; segLen > room {
			if room < 10 {
				break
			}
			segLen = room
		}
		if c.moves && rng.IntN(2) == 0 {
			segLen = (segLen - 1) / 2
			k = segLen + 1
		}
		need := segLen + k + 2
		xorShare := rng.IntN(3) // 0: none, 1: some, 2: many
		isXor := func() bool { return xorShare > 0 && rng.IntN(4-xorShare) == 0 }
		skip := func() bool { return rng.IntN(12) == 0 }
		if rng.IntN(2) == 0 { // ascending: dest b ← b+k (xor reads b+k, b+k+1)
			for b := pos; b < pos+segLen; b++ {
				if !skip() {
					addOrdered(uint64(b), uint64(b+k), isXor())
				}
			}
		} else { // descending: dest b ← b-k (xor reads b-k-1, b-k)
			for b := pos + need - 1; b >= pos+k+2; b-- {
				if !skip() {
					s := uint64(b - k)
					x := isXor()
					if x {
						s--
					}
					addOrdered(uint64(b), s, x)
				}
			}
		}
		pos += need + rng.IntN(4)
	}
	// Copy cycles (swaps) broken by Replace: a ← c by Copy, c ← old a by Replace.
	type repl struct {
		op   cow.Op
		data []byte
	}
	var repls []repl
	for i := 0; i < 20 && pos+2 < limit+nb/10; i++ {
		a, cc := uint64(pos), uint64(pos+1+rng.IntN(2))
		addOrdered(a, cc, false)
		dest[cc] = true
		repls = append(repls, repl{cow.Op{Type: cow.OpReplace, NewBlock: cc, DataLength: bs}, append([]byte(nil), blk(base, a)...)})
		pos = int(cc) + 1 + rng.IntN(3)
	}
	// Apply ordered ops one at a time on a working image, checking the rule.
	work := append([]byte(nil), base...)
	written := make([]bool, nb)
	for i := range ordered {
		op := &ordered[i]
		var srcOff uint64
		if op.Type == cow.OpXor {
			srcOff = op.Source
		} else {
			srcOff = op.Source * bs
		}
		for b := srcOff / bs; b*bs < srcOff+bs; b++ {
			if written[b] {
				t.Fatalf("generator broke the merge order rule: op %d (%s) reads block %d written earlier", i, op, b)
			}
		}
		data := append([]byte(nil), work[srcOff:srcOff+bs]...)
		if op.Type == cow.OpXor {
			// The payload is target XOR source; the target is random.
			tgt := make([]byte, bs)
			fillRandom(rng, tgt)
			p := make([]byte, bs)
			for j := range p {
				p[j] = tgt[j] ^ data[j]
			}
			src.payload[op.NewBlock] = p
			data = tgt
		}
		copy(blk(work, op.NewBlock), data)
		written[op.NewBlock] = true
	}
	img.nOrd = len(ordered)
	// Replace/Zero ops over the rest, sorted ascending afterwards.
	for b := pos; b < nb; {
		switch r := rng.IntN(10); {
		case r < 2: // untouched gap
			b += 1 + rng.IntN(30)
		case r < 4: // zero run
			n := 1 + rng.IntN(40)
			for j := 0; j < n && b < nb; j, b = j+1, b+1 {
				if !dest[b] {
					repls = append(repls, repl{cow.Op{Type: cow.OpZero, NewBlock: uint64(b)}, make([]byte, bs)})
					dest[b] = true
				}
			}
		case r < 5: // long single-block replace run, crossing the 256-block cap
			n := 200 + rng.IntN(200)
			for j := 0; j < n && b < nb; j, b = j+1, b+1 {
				if !dest[b] {
					d := make([]byte, bs)
					fillRandom(rng, d)
					repls = append(repls, repl{cow.Op{Type: cow.OpReplace, NewBlock: uint64(b), DataLength: bs}, d})
					dest[b] = true
				}
			}
		default: // replace, multi-block in v3
			shift := 0
			if c.version >= 3 {
				shift = rng.IntN(5) // 1..16 blocks
			}
			n := 1 << shift
			if b+n > nb {
				n, shift = 1, 0
			}
			free := true
			for j := b; j < b+n; j++ {
				free = free && !dest[j]
			}
			if !free {
				b++
				continue
			}
			d := make([]byte, n*bs)
			fillRandom(rng, d)
			repls = append(repls, repl{cow.Op{Type: cow.OpReplace, NewBlock: uint64(b), DataLength: uint32(n * bs), FactorShift: uint8(shift)}, d})
			for j := b; j < b+n; j++ {
				dest[j] = true
			}
			b += n
		}
	}
	sort.Slice(repls, func(i, j int) bool { return repls[i].op.NewBlock < repls[j].op.NewBlock })
	order := ordered
	for _, r := range repls {
		order = append(order, r.op)
		copy(work[r.op.NewBlock*bs:], r.data)
		if r.op.Type == cow.OpReplace {
			src.payload[r.op.NewBlock] = r.data
		}
	}
	src.order = order
	img.src = src
	img.target = work
	if c.real {
		img.cowImg = buildCOW(t, img, c)
		r, err := cow.NewReader(bytes.NewReader(img.cowImg), int64(len(img.cowImg)), nil)
		if err != nil {
			t.Fatalf("parsing the written COW: %v", err)
		}
		if err := r.VerifyMergeOps(); err != nil {
			t.Fatalf("written COW: %v", err)
		}
		img.source = r
		multi := 0
		for _, op := range r.MergeOrder() {
			if op.FactorShift > 0 {
				multi++
			}
		}
		if c.version >= 3 && multi == 0 {
			t.Fatal("the v3 writer produced no multi-block Replace ops")
		}
	} else {
		img.cowImg = makeCOW(t, c.version, c.scratch)
		img.source = src
	}
	img.order = img.source.MergeOrder()
	if c.backing {
		separateBacking(rng, img)
	}
	return img
}

// backingExtraBlocks is how much larger than the source device the base
// device of a genConfig.backing image is (unmapped blocks: base content).
const backingExtraBlocks = 7

// separateBacking turns img into a merge from a separate source device: the
// old image moves to img.backing; img.base keeps the old data only where
// the COW maps nothing (where reads come from base, as on a device: base is
// the partition itself), holds garbage in every destination block, and has
// backingExtraBlocks more unmapped blocks, which the target keeps.
func separateBacking(rng *rand.Rand, img *image) {
	img.backing = img.base
	nb := len(img.backing) / bs
	base := make([]byte, (nb+backingExtraBlocks)*bs)
	copy(base, img.backing)
	fillRandom(rng, base[nb*bs:])
	for _, op := range img.order {
		fillRandom(rng, base[op.NewBlock*bs:(op.NewBlock+op.Blocks())*bs])
	}
	img.base = base
	img.target = append(img.target, base[nb*bs:]...)
}

// backingFile returns a fresh source device for img's Options.Backing,
// or nil (in place).
func (img *image) backingFile() faultfs.File {
	if img.backing == nil {
		return nil
	}
	return faultfs.NewMemFile("backing.img", img.backing)
}

// resume is referenceResume for img (with its source device).
func (img *image) resume(t testing.TB, cowImg, baseImg []byte) []byte {
	t.Helper()
	return referenceResumeFrom(t, cowImg, baseImg, img.backing, img.source)
}

// buildCOW writes the generated ops with the cow package's writers: sequence
// data for the ordered ops, then the ops themselves, Replace runs as single
// AddRawBlocks calls (multi-block units in v3 with a 64 KiB factor).
func buildCOW(t testing.TB, img *image, c genConfig) []byte {
	t.Helper()
	nb := uint64(len(img.base) / bs)
	f := faultfs.NewMemFile("real.cow", nil)
	opts := cow.WriterOptions{Compression: c.comp, NoScratch: !c.scratch, MaxBlocks: nb}
	var w cow.Writer
	var err error
	if c.version >= 3 {
		opts.CompressionFactor = 64 << 10
		w, err = cow.NewWriterV3(f, opts)
	} else {
		w, err = cow.NewWriterV2(f, opts)
	}
	if err != nil {
		t.Fatal(err)
	}
	var seq []uint32
	for _, op := range img.src.order[:img.nOrd] {
		seq = append(seq, uint32(op.NewBlock))
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.AddSequenceData(seq))
	ops := img.src.order
	for i := 0; i < len(ops); i++ {
		op := ops[i]
		switch op.Type {
		case cow.OpCopy:
			must(w.AddCopy(op.NewBlock, op.Source, 1))
		case cow.OpXor:
			must(w.AddXorBlocks(op.NewBlock, img.src.payload[op.NewBlock], op.Source/bs, uint16(op.Source%bs)))
		case cow.OpReplace:
			// Contiguous Replace ops go in as one call, so that the v3
			// writer emits multi-block units.
			data := append([]byte(nil), img.src.payload[op.NewBlock]...)
			next := op.NewBlock + op.Blocks()
			for i+1 < len(ops) && ops[i+1].Type == cow.OpReplace && ops[i+1].NewBlock == next {
				i++
				data = append(data, img.src.payload[ops[i].NewBlock]...)
				next += ops[i].Blocks()
			}
			must(w.AddRawBlocks(op.NewBlock, data))
		case cow.OpZero:
			must(w.AddZeroBlocks(op.NewBlock, op.Blocks()))
		}
	}
	must(w.Finalize())
	return f.Bytes()
}

// makeCOW builds the merge-relevant part of a COW file: header, zeroed
// scratch region (if any) and some tail standing in for ops and data.
func makeCOW(t testing.TB, version int, scratch bool) []byte {
	h := cow.Header{Magic: cow.Magic, MajorVersion: uint16(version), BlockSize: bs}
	if version >= 3 {
		h.HeaderSize, h.OpSize, h.ResumePointMax = cow.HeaderV3Size, cow.OpV3Size, cow.NumResumePoints
		h.CompressionAlgorithm = cow.CompressionNone
	} else {
		h.HeaderSize, h.OpSize, h.FooterSize, h.ClusterOps = cow.HeaderV2Size, cow.OpV2Size, cow.FooterSize, cow.DefaultClusterOps
	}
	if scratch {
		h.BufferSize = cow.BufferRegionDefaultSize
	}
	p, err := h.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, int(h.HeaderSize)+int(h.BufferSize)+4096)
	copy(out, p)
	for i := len(out) - 4096; i < len(out); i++ {
		out[i] = 0xa5
	}
	return out
}

// files returns fresh in-memory COW and base files for img.
func (img *image) files() (*faultfs.MemFile, *faultfs.MemFile) {
	return faultfs.NewMemFile("test.cow", img.cowImg), faultfs.NewMemFile("base.img", img.base)
}

// diffBlocks describes where got differs from want.
func diffBlocks(got, want []byte) string {
	if len(got) != len(want) {
		return fmt.Sprintf("size %d, want %d", len(got), len(want))
	}
	var bad []int
	for b := 0; b*bs < len(want); b++ {
		if !bytes.Equal(got[b*bs:(b+1)*bs], want[b*bs:(b+1)*bs]) {
			bad = append(bad, b)
		}
	}
	if len(bad) == 0 {
		return ""
	}
	if len(bad) > 10 {
		return fmt.Sprintf("%d blocks differ, first %v", len(bad), bad[:10])
	}
	return fmt.Sprintf("blocks %v differ", bad)
}

// referenceResume is an independent model of AOSP's recovery rule: given the
// durable COW and base images, it finishes the merge op by op (sources are
// intact for every op not yet merged) and returns the final image. A state it
// cannot interpret is a test failure.
func referenceResume(t testing.TB, cowImg, baseImg []byte, src Source) []byte {
	t.Helper()
	return referenceResumeFrom(t, cowImg, baseImg, nil, src)
}

// referenceResumeFrom is referenceResume with Copy/Xor sources read from a
// separate source device (nil: from the base image as it is being merged).
func referenceResumeFrom(t testing.TB, cowImg, baseImg, backing []byte, src Source) []byte {
	t.Helper()
	order := src.MergeOrder()
	payload := func(op *cow.Op) []byte {
		p := make([]byte, op.Blocks()*bs)
		if n, err := src.ReadData(op, p, 0); err != nil || n != len(p) {
			t.Fatalf("reference recovery: payload of %s: %d bytes, %v", op, n, err)
		}
		return p
	}
	hs := int(binary.LittleEndian.Uint16(cowImg[12:]))
	nmo := binary.LittleEndian.Uint64(cowImg[cow.OffsetNumMergeOps:])
	bufSize := binary.LittleEndian.Uint32(cowImg[cow.OffsetBufferSize:])
	img := append([]byte(nil), baseImg...)
	i := int(nmo)
	if bufSize > 0 {
		switch st := cowImg[hs]; st {
		case 0, 1:
		case 2:
			n := 0
			for off := hs + 1; ; off += 16 {
				nbk := binary.LittleEndian.Uint64(cowImg[off:])
				fo := binary.LittleEndian.Uint64(cowImg[off+8:])
				if nbk == 0 && fo == 0 {
					break
				}
				if want := order[i+n].NewBlock; nbk != want {
					t.Fatalf("reference recovery: scratch entry %d new_block %d, want %d", n, nbk, want)
				}
				copy(img[nbk*bs:(nbk+1)*bs], cowImg[fo:fo+bs])
				n++
			}
			if n == 0 {
				t.Fatal("reference recovery: state 2 with no entries")
			}
			i += n
		default:
			t.Fatalf("reference recovery: read_ahead_state %d", st)
		}
	}
	from := backing
	if from == nil {
		from = img
	}
	for ; i < len(order); i++ {
		op := &order[i]
		d := img[op.NewBlock*bs : (op.NewBlock+op.Blocks())*bs]
		switch op.Type {
		case cow.OpCopy:
			copy(d, from[op.Source*bs:(op.Source+1)*bs])
		case cow.OpXor:
			// A copy: an unaligned source may overlap d itself.
			s := append([]byte(nil), from[op.Source:op.Source+bs]...)
			p := payload(op)
			for j := range d {
				d[j] = s[j] ^ p[j]
			}
		case cow.OpZero:
			clear(d)
		case cow.OpReplace:
			copy(d, payload(op))
		}
	}
	return img
}

func TestGenerator(t *testing.T) {
	var nz int
	for _, v := range []int{2, 3} {
		img := generate(t, genConfig{seed: 1, blocks: 3000, version: v, scratch: true})
		var nx, nc, nr, nm int
		overlapInWindow := 0
		for i, op := range img.src.order {
			switch op.Type {
			case cow.OpXor:
				nx++
			case cow.OpCopy:
				nc++
			case cow.OpReplace:
				nr++
				if op.FactorShift > 0 {
					nm++
				}
			case cow.OpZero:
				nz++
			}
			// Does a later op of the same 510-window write this op's source?
			if op.Type.IsOrdered() {
				for j := i + 1; j < img.nOrd && j/510 == i/510; j++ {
					if s := op.Source; (op.Type == cow.OpCopy && img.src.order[j].NewBlock == s) ||
						(op.Type == cow.OpXor && img.src.order[j].NewBlock == s/bs) {
						overlapInWindow++
						break
					}
				}
			}
		}
		t.Logf("v%d: %d ops: %d copy, %d xor, %d replace (%d multi-block), %d zero; %d ordered ops have in-window overlaps",
			v, len(img.src.order), nc, nx, nr, nm, nz, overlapInWindow)
		if nx == 0 || nc == 0 || nr == 0 || overlapInWindow < 100 || (v == 3 && nm == 0) || img.nOrd < 1100 {
			t.Fatalf("generator does not cover the op mix")
		}
		if got := referenceResume(t, img.cowImg, img.base, img.source); !bytes.Equal(got, img.target) {
			t.Fatalf("reference merge from scratch: %s", diffBlocks(got, img.target))
		}
	}
	if nz == 0 {
		t.Fatal("no zero ops generated")
	}
}
