package legacy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/cow/create"
	"github.com/vabc-go/vabc/internal/faultfs"
	"github.com/vabc-go/vabc/kernel/dmuser"
	"github.com/vabc-go/vabc/snapuserd/merge"
)

// testCase is a generated in-place update: base (also the Copy/Xor source,
// as in Virtual A/B) and the COW that turns it into target.
type testCase struct {
	name         string
	base, target []byte
	cow          []byte
}

const testBlocks = 1200

// genCase builds base and target images with overlapping copies (a
// shifted run, so the merge order matters), moved runs, Xor-able edits,
// new data and zeros, and a COW between them with cow/create.
func genCase(t testing.TB, version int, factor uint32, noScratch bool, seed uint64) *testCase {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	bs := ChunkSize
	base := make([]byte, testBlocks*bs)
	for i := range base {
		base[i] = byte(r.Uint32())
	}
	tgt := append([]byte(nil), base...)
	blk := func(img []byte, b int) []byte { return img[b*bs : (b+1)*bs] }
	for b := 100; b < 400; b++ { // shifted: block b ← b-3 (overlapping)
		copy(blk(tgt, b), blk(base, b-3))
	}
	for b := 500; b < 700; b++ { // moved from far away
		copy(blk(tgt, b), blk(base, b+400))
	}
	if !noScratch {
		for b := 700; b < 760; b++ { // small edits: Xor candidates
			x := blk(tgt, b)
			x[r.IntN(bs)] ^= 0x5a
			x[r.IntN(bs)] ^= 0xa5
		}
	}
	for b := 800; b < 1000; b++ { // new data
		for i := range blk(tgt, b) {
			blk(tgt, b)[i] = byte(r.Uint32())
		}
	}
	for b := 1100; b < 1150; b++ {
		clear(blk(tgt, b))
	}
	path := filepath.Join(t.TempDir(), "system.cow")
	im := func(b []byte, n string) create.Image {
		return create.Image{R: bytes.NewReader(b), Size: int64(len(b)), Name: n}
	}
	_, err := create.Build(context.Background(), im(base, "base"), im(tgt, "target"), path,
		create.Options{Xor: !noScratch},
		create.CowOptions{Version: version, Writer: cow.WriterOptions{BlockSize: ChunkSize, Compression: cow.CompressionLz4,
			CompressionFactor: factor, NoScratch: noScratch}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return &testCase{name: fmt.Sprintf("v%d-%dK-scratch=%v", version, max(factor, ChunkSize)/1024, !noScratch), base: base, target: tgt, cow: c}
}

var cases = []struct {
	version   int
	factor    uint32
	noScratch bool
	window    int // merge.Options.WindowBlocks (0 = 510)
}{
	{2, 0, false, 0},
	{2, 0, false, 7},
	{3, 0, false, 0},
	{3, 64 << 10, false, 13},
	{2, 0, true, 0},
}

type files struct {
	cow, base *faultfs.MemFile
}

func (tc *testCase) files() files {
	return files{faultfs.NewMemFile("system.cow", tc.cow), faultfs.NewMemFile("base.img", tc.base)}
}

func open(t testing.TB, f files, window int) *Device {
	t.Helper()
	d, err := New("system", f.cow, f.base, &Options{Merge: &merge.Options{WindowBlocks: window}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func readChunk(t testing.TB, d *Device, c uint64) []byte {
	t.Helper()
	p := make([]byte, ChunkSize)
	if err := d.ReadSectors(p, c*ChunkSectors); err != nil {
		t.Fatalf("read chunk %d: %v", c, err)
	}
	return p
}

// parsedStore is what an independent reader of the persistent format finds
// on the device.
type parsedStore struct {
	exc   [][2]uint64 // {old_chunk, new_chunk} in area order
	areas int         // areas read (the last one holds the terminator)
}

// parseStore reads the device as dm-snap-persistent's read_header +
// read_exceptions would, decoding every field by hand.
func parseStore(t testing.TB, d *Device) parsedStore {
	t.Helper()
	h := readChunk(t, d, 0)
	le := binary.LittleEndian
	if m, v, ver, cs := le.Uint32(h), le.Uint32(h[4:]), le.Uint32(h[8:]), le.Uint32(h[12:]); m != 0x70416e53 || v != 1 || ver != 1 || cs != 8 {
		t.Fatalf("disk_header magic %#x valid %d version %d chunk_size %d", m, v, ver, cs)
	}
	if !bytes.Equal(h[16:], make([]byte, ChunkSize-16)) {
		t.Fatal("disk_header chunk not zero after 16 bytes")
	}
	var ps parsedStore
	for a := 0; ; a++ {
		ps.areas++
		area := readChunk(t, d, 1+uint64(a)*257)
		i := 0
		for ; i < 256; i++ {
			old, nc := le.Uint64(area[16*i:]), le.Uint64(area[16*i+8:])
			if nc == 0 {
				break
			}
			ps.exc = append(ps.exc, [2]uint64{old, nc})
		}
		if i < 256 {
			if !bytes.Equal(area[16*i:], make([]byte, ChunkSize-16*i)) {
				t.Fatalf("area %d: data after the terminating entry %d", a, i)
			}
			return ps
		}
	}
}

// TestStoreParsesBack: header, every exception, chunk geometry, the data of
// every chunk, and the ordering and gap rules, for generated COWs.
func TestStoreParsesBack(t *testing.T) {
	for _, c := range cases {
		tc := genCase(t, c.version, c.factor, c.noScratch, 1)
		t.Run(fmt.Sprintf("%s-w%d", tc.name, c.window), func(t *testing.T) {
			d := open(t, tc.files(), c.window)
			ps := parseStore(t, d)
			order := d.order
			nChunks := uint64(d.Size() / ChunkSize)
			if d.Size()%ChunkSize != 0 {
				t.Fatalf("size %d not whole chunks", d.Size())
			}
			// Every block written by the COW appears exactly once.
			want := map[uint64]int{}
			for i := range order {
				for k := uint64(0); k < order[i].Blocks(); k++ {
					want[order[i].NewBlock+k] = i
				}
			}
			if len(ps.exc) != len(want) {
				t.Fatalf("%d exceptions, the COW writes %d blocks", len(ps.exc), len(want))
			}
			if wantAreas := len(ps.exc)/256 + 1; ps.areas != wantAreas || d.lay.Areas() != wantAreas {
				t.Fatalf("read %d areas, layout has %d, want %d", ps.areas, d.lay.Areas(), wantAreas)
			}
			prevIdx := len(order)
			for g, e := range ps.exc {
				old, nc := e[0], e[1]
				if nc%257 == 1 || nc < 2 || nc >= nChunks {
					t.Fatalf("exception %d: new_chunk %d is a header/metadata chunk or past %d", g, nc, nChunks)
				}
				if g > 0 && nc <= ps.exc[g-1][1] {
					t.Fatalf("exception %d: new_chunk %d not above %d", g, nc, ps.exc[g-1][1])
				}
				i, ok := want[old]
				if !ok {
					t.Fatalf("exception %d: old_chunk %d is not written by the COW", g, old)
				}
				delete(want, old)
				// Reverse merge order: ops are placed last-merged first.
				if i > prevIdx {
					t.Fatalf("exception %d: merge-order op %d placed after op %d", g, i, prevIdx)
				}
				prevIdx = i
				if got := readChunk(t, d, nc); !bytes.Equal(got, tc.target[old*ChunkSize:(old+1)*ChunkSize]) {
					t.Fatalf("exception %d: chunk %d does not hold target block %d", g, nc, old)
				}
			}
			checkBatches(t, d, ps, c.window)
			// Skipped chunk ids and chunks past the last area read as zeros.
			used := map[uint64]bool{}
			for _, e := range ps.exc {
				used[e[1]] = true
			}
			for ch := uint64(2); ch < nChunks; ch++ {
				if !used[ch] && ch%257 != 1 && !bytes.Equal(readChunk(t, d, ch), make([]byte, ChunkSize)) {
					t.Fatalf("unused chunk %d is not zero", ch)
				}
			}
			// Unaligned reads are cut from whole chunks.
			p := make([]byte, 3*512)
			if err := d.ReadSectors(p, 6); err != nil {
				t.Fatal(err)
			}
			hdr := readChunk(t, d, 0)
			a0 := readChunk(t, d, 1)
			if !bytes.Equal(p, append(append([]byte(nil), hdr[6*512:]...), a0[:512]...)) {
				t.Fatal("unaligned read across the header and area 0 differs")
			}
			if err := d.ReadSectors(make([]byte, 512), uint64(d.Size()/512)); err == nil {
				t.Fatal("read past the end succeeded")
			}
		})
	}
}

// checkBatches: runs the kernel could merge at once (old and new chunks
// both consecutive) never mix Replace/Zero and ordered ops, never hold an
// intra-run dependency between ordered ops, and never cross a read-ahead
// window boundary.
func checkBatches(t *testing.T, d *Device, ps parsedStore, window int) {
	t.Helper()
	order := d.order
	idx := func(g int) int { return int(d.lay.refs[g].idx) }
	ra := d.eng.ReadAheadOps()
	if window > 0 && ra != window {
		t.Fatalf("read-ahead window %d, want %d", ra, window)
	}
	for lo := 0; lo < len(ps.exc); {
		hi := lo + 1
		for hi < len(ps.exc) && hi%256 != 0 && ps.exc[hi][0] == ps.exc[hi-1][0]+1 && ps.exc[hi][1] == ps.exc[hi-1][1]+1 {
			hi++
		}
		srcs, dsts := map[uint64]bool{}, map[uint64]bool{}
		for g := lo; g < hi; g++ {
			op := &order[idx(g)]
			if op.Type.IsOrdered() != order[idx(lo)].Type.IsOrdered() {
				t.Fatalf("exceptions %d–%d: a mergeable run mixes ordered and Replace/Zero ops", lo, hi-1)
			}
			if !op.Type.IsOrdered() {
				continue
			}
			if ra > 0 && (idx(g)-d.start)/ra != (idx(lo)-d.start)/ra {
				t.Fatalf("exceptions %d–%d: a mergeable run crosses a read-ahead window boundary", lo, hi-1)
			}
			a, b, two := srcBlocks(op)
			for _, s := range []uint64{a, b} {
				if (s == a || two) && dsts[s] {
					t.Fatalf("exceptions %d–%d: op %d reads block %d written by the same run", lo, hi-1, idx(g), s)
				}
			}
			if srcs[op.NewBlock] {
				t.Fatalf("exceptions %d–%d: op %d writes block %d read by the same run", lo, hi-1, idx(g), op.NewBlock)
			}
			srcs[a] = true
			if two {
				srcs[b] = true
			}
			dsts[op.NewBlock] = true
		}
		lo = hi
	}
}

// kernel models dm-snapshot's merge over the persistent store on the
// device (dm-snap-persistent.c persistent_prepare_merge /
// persistent_commit_merge, dm-snap.c snapshot_merge_next_chunks): it reads
// the areas like read_exceptions, then repeatedly merges the longest run of
// consecutive exceptions at the end of the current area: copies the chunks
// to the origin, flushes the origin, zeroes the exceptions and writes the
// area back.
type kernel struct {
	t         testing.TB
	origin    faultfs.File
	area      int
	committed int
	img       []byte
	steps     int
}

func newKernel(t testing.TB, d *Device, origin faultfs.File) *kernel {
	ps := parseStore(t, d)
	k := &kernel{t: t, origin: origin, area: ps.areas - 1, committed: len(ps.exc) % 256}
	k.img = readChunk(t, d, AreaChunk(k.area))
	return k
}

func (k *kernel) entry(i int) (old, nc uint64) {
	return binary.LittleEndian.Uint64(k.img[16*i:]), binary.LittleEndian.Uint64(k.img[16*i+8:])
}

// step merges one run; it returns false when the merge is complete.
// beforeCommit, if set, runs after the origin flush and before the
// metadata write (a daemon restart there makes the new daemon see it).
func (k *kernel) step(d func() *Device, beforeCommit func()) (bool, error) {
	if k.committed == 0 {
		if k.area == 0 {
			return false, nil
		}
		k.area--
		k.img = readChunk(k.t, d(), AreaChunk(k.area))
		k.committed = 256
	}
	lastOld, lastNew := k.entry(k.committed - 1)
	n := 1
	for n < k.committed {
		o, c := k.entry(k.committed - 1 - n)
		if o != lastOld-uint64(n) || c != lastNew-uint64(n) {
			break
		}
		n++
	}
	buf := make([]byte, n*ChunkSize)
	if err := d().ReadSectors(buf, (lastNew+1-uint64(n))*ChunkSectors); err != nil {
		return false, err
	}
	if err := faultfs.WriteFull(k.origin, buf, int64(lastOld+1-uint64(n))*ChunkSize); err != nil {
		return false, err
	}
	if err := k.origin.Sync(); err != nil {
		return false, err
	}
	if beforeCommit != nil {
		beforeCommit()
	}
	clear(k.img[16*(k.committed-n) : 16*k.committed])
	if err := d().WriteSectors(append([]byte(nil), k.img...), AreaChunk(k.area)*ChunkSectors); err != nil {
		return false, err
	}
	k.committed -= n
	k.steps++
	return true, nil
}

func numMergeOps(t testing.TB, f *faultfs.MemFile) uint64 {
	t.Helper()
	return binary.LittleEndian.Uint64(f.Bytes()[cow.OffsetNumMergeOps:])
}

func (k *kernel) run(t testing.TB, d func() *Device, hook func(step int)) {
	t.Helper()
	for {
		if hook != nil {
			hook(k.steps)
		}
		more, err := k.step(d, nil)
		if err != nil {
			t.Fatalf("merge step %d: %v", k.steps, err)
		}
		if !more {
			return
		}
	}
}

// TestKernelMerge: the kernel model merges the store into the base, which
// ends equal to the target with num_merge_ops = all ops; a new store then
// has no exceptions.
func TestKernelMerge(t *testing.T) {
	for _, c := range cases {
		tc := genCase(t, c.version, c.factor, c.noScratch, 2)
		t.Run(fmt.Sprintf("%s-w%d", tc.name, c.window), func(t *testing.T) {
			f := tc.files()
			d := open(t, f, c.window)
			total := uint64(len(d.order))
			k := newKernel(t, d, f.base)
			k.run(t, func() *Device { return d }, nil)
			if !bytes.Equal(f.base.Bytes(), tc.target) {
				t.Fatal("base after the kernel merge differs from the target")
			}
			if got := numMergeOps(t, f.cow); got != total {
				t.Fatalf("num_merge_ops %d, want %d", got, total)
			}
			if m, tot, failed := d.MergeProgress(); m != total || tot != total || failed {
				t.Fatalf("MergeProgress %d/%d failed=%v", m, tot, failed)
			}
			t.Logf("%d ops merged in %d kernel steps", total, k.steps)
			d2 := open(t, f, c.window)
			if ps := parseStore(t, d2); len(ps.exc) != 0 || d2.Size() != 2*ChunkSize {
				t.Fatalf("store after the merge: %d exceptions, %d bytes", len(ps.exc), d2.Size())
			}
		})
	}
}

// TestDaemonRestart: the daemon is replaced (SIGKILL + restart: files keep
// every write) at every few kernel steps, sometimes between the origin
// flush and the metadata write; the kernel keeps its state and goes on.
// The store a restarted daemon synthesizes must match what the kernel
// knows, and the base must end equal to the target.
func TestDaemonRestart(t *testing.T) {
	for _, c := range cases {
		tc := genCase(t, c.version, c.factor, c.noScratch, 3)
		t.Run(fmt.Sprintf("%s-w%d", tc.name, c.window), func(t *testing.T) {
			for _, every := range []int{2, 11} {
				f := tc.files()
				d := open(t, f, c.window)
				k := newKernel(t, d, f.base)
				get := func() *Device { return d }
				restarts := 0
				for {
					var hook func()
					if k.steps%every == 0 {
						hook = func() { d = open(t, f, c.window); restarts++ }
					}
					more, err := k.step(get, hook)
					if err != nil {
						t.Fatalf("every %d: step %d after %d restarts: %v", every, k.steps, restarts, err)
					}
					if !more {
						break
					}
				}
				if !bytes.Equal(f.base.Bytes(), tc.target) {
					t.Fatalf("every %d: base differs from the target after %d restarts", every, restarts)
				}
				if got, want := numMergeOps(t, f.cow), uint64(len(d.order)); got != want {
					t.Fatalf("every %d: num_merge_ops %d, want %d", every, got, want)
				}
			}
		})
	}
}

// cutter takes the power-cut images of both files at the n-th write or
// sync of either (the daemon's COW commits and the kernel's origin writes).
type cutter struct {
	n, at int
	cfg   faultfs.CrashCloneConfig
	f     files
	taken *files
}

type cutFile struct {
	*faultfs.MemFile
	c *cutter
}

func (c *cutter) tick() {
	c.at++
	if c.at == c.n {
		c.taken = &files{c.f.cow.CrashClone(c.cfg), c.f.base.CrashClone(c.cfg)}
	}
}

func (f cutFile) WriteAt(p []byte, off int64) (int, error) {
	f.c.tick()
	return f.MemFile.WriteAt(p, off)
}

func (f cutFile) Sync() error {
	f.c.tick()
	return f.MemFile.Sync()
}

// TestPowerCut: the machine loses power at the n-th write or sync of the
// COW or the base, for every n of the first 24 and a sample of the rest
// (every n with VABC_LONG=1): both keep only synced data (plus, in some
// trials, a random share of unsynced writes, torn at 4 KiB). After the
// reboot a new daemon and a new kernel merge finish the job, and the base
// must equal the target.
func TestPowerCut(t *testing.T) {
	for _, c := range cases {
		tc := genCase(t, c.version, c.factor, c.noScratch, 4)
		t.Run(fmt.Sprintf("%s-w%d", tc.name, c.window), func(t *testing.T) {
			r := rand.New(rand.NewPCG(9, uint64(c.window)))
			stride := 80 // VABC_LONG=1: every I/O point
			if os.Getenv("VABC_LONG") != "" {
				stride = 1
			}
			// Every point of the start (the first window's persist and the
			// first steps), then a sample.
			next := func(n int) int {
				if n < 24 {
					return n + 1
				}
				return n + 1 + r.IntN(stride)
			}
			for n := 1; ; n = next(n) {
				pct := []int{0, 50, 100}[n%3]
				cu := &cutter{n: n, cfg: faultfs.CrashCloneConfig{UnsyncedDataPercent: pct, RNG: r, PageSize: 4096}, f: tc.files()}
				cowF, baseF := cutFile{cu.f.cow, cu}, cutFile{cu.f.base, cu}
				d, err := New("system", cowF, baseF, &Options{Merge: &merge.Options{WindowBlocks: c.window}})
				if err != nil {
					t.Fatal(err)
				}
				k := newKernel(t, d, baseF)
				k.run(t, func() *Device { return d }, nil)
				if cu.taken == nil {
					t.Logf("power cut at each of %d I/O points", cu.at)
					return
				}
				f := *cu.taken
				d = open(t, f, c.window)
				k2 := newKernel(t, d, f.base)
				k2.run(t, func() *Device { return d }, nil)
				if !bytes.Equal(f.base.Bytes(), tc.target) {
					t.Fatalf("power cut at I/O %d (%d%% unsynced kept): base differs from the target", n, pct)
				}
			}
		})
	}
}

// TestBadMetadataWrites: torn, malformed and out-of-order metadata writes
// are refused with ErrBadMetadataWrite (data writes with ErrReadOnly), and
// nothing is committed or changed for them.
func TestBadMetadataWrites(t *testing.T) {
	tc := genCase(t, 2, 0, false, 5)
	f := tc.files()
	d := open(t, f, 0)
	ps := parseStore(t, d)
	last := ps.areas - 1
	if last < 1 {
		t.Fatalf("need ≥ 2 areas, have %d", ps.areas)
	}
	put := func(img []byte, i int, old, nc uint64) {
		binary.LittleEndian.PutUint64(img[16*i:], old)
		binary.LittleEndian.PutUint64(img[16*i+8:], nc)
	}
	// A first valid step (the last exception), so that the bad writes below
	// are not the first step of this daemon (see MergeStep.Spans).
	valid := readChunk(t, d, AreaChunk(last))
	n := len(ps.exc) % 256
	if n < 4 {
		t.Fatalf("last area holds %d exceptions, need ≥ 4", n)
	}
	put(valid, n-1, 0, 0)
	if err := d.WriteSectors(append([]byte(nil), valid...), AreaChunk(last)*8); err != nil {
		t.Fatalf("first valid step: %v", err)
	}
	n--
	mut := func(fn func(img []byte)) []byte {
		img := append([]byte(nil), valid...)
		fn(img)
		return img
	}
	zeroLast := func(img []byte) { put(img, n-1, 0, 0) }
	tests := []struct {
		name   string
		sector uint64
		data   []byte
		want   error
	}{
		{"unchanged area", AreaChunk(last) * 8, valid, ErrBadMetadataWrite},
		{"torn half chunk", AreaChunk(last) * 8, mut(zeroLast)[:2048], ErrBadMetadataWrite},
		{"entry changed", AreaChunk(last) * 8, mut(func(img []byte) { zeroLast(img); img[0] ^= 1 }), ErrBadMetadataWrite},
		{"new_chunk zero, old_chunk set", AreaChunk(last) * 8, mut(func(img []byte) { put(img, n-1, 5, 0) }), ErrBadMetadataWrite},
		{"entry set after zero", AreaChunk(last) * 8, mut(func(img []byte) { put(img, n-2, 0, 0) }), ErrBadMetadataWrite},
		{"garbage after terminator", AreaChunk(last) * 8, mut(func(img []byte) { zeroLast(img); put(img, 200, 1, 2) }), ErrBadMetadataWrite},
		{"new exception added", AreaChunk(last) * 8, mut(func(img []byte) { put(img, n, 77, 9999) }), ErrBadMetadataWrite},
		{"earlier area first", AreaChunk(last-1) * 8, mut(func(img []byte) {
			copy(img, readChunk(t, d, AreaChunk(last-1)))
			put(img, 255, 0, 0)
		}), ErrBadMetadataWrite},
		{"area past the store", AreaChunk(last+1) * 8, make([]byte, ChunkSize), ErrBadMetadataWrite},
		{"header chunk", 0, make([]byte, ChunkSize), dmuser.ErrReadOnly},
		{"data chunk", ps.exc[0][1] * 8, make([]byte, ChunkSize), dmuser.ErrReadOnly},
		{"unaligned", AreaChunk(last)*8 + 1, mut(zeroLast), dmuser.ErrReadOnly},
	}
	before := f.cow.Bytes()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := d.WriteSectors(tt.data, tt.sector)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			t.Log(err)
			if !bytes.Equal(f.cow.Bytes(), before) {
				t.Fatal("the COW changed")
			}
			if got := readChunk(t, d, AreaChunk(last)); !bytes.Equal(got, valid) {
				t.Fatal("the store's area changed")
			}
		})
	}
	// The valid step is still accepted afterwards.
	if err := d.WriteSectors(mut(zeroLast), AreaChunk(last)*8); err != nil {
		t.Fatalf("valid step after refused ones: %v", err)
	}
	if err := d.WriteSectors(nil, 0); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

// TestLayoutPrefix: a store synthesized from a later merge position (at a
// commit point) is a prefix of the earlier one, which is what a restarted
// daemon relies on.
func TestLayoutPrefix(t *testing.T) {
	tc := genCase(t, 2, 0, false, 6)
	r, err := cow.NewReader(bytes.NewReader(tc.cow), int64(len(tc.cow)), &cow.ReaderOptions{Legacy: true})
	if err != nil {
		t.Fatal(err)
	}
	order := r.MergeOrder()
	nOrd := 0
	for nOrd < len(order) && order[nOrd].Type.IsOrdered() {
		nOrd++
	}
	const ra = 7
	full, err := NewLayout(order, 0, ra)
	if err != nil {
		t.Fatal(err)
	}
	for _, start := range []int{ra, 5 * ra, nOrd, nOrd + 1, len(order) - 1, len(order)} {
		if start > len(order) || (start < nOrd && start%ra != 0) {
			continue
		}
		l, err := NewLayout(order, start, ra)
		if err != nil {
			t.Fatal(err)
		}
		if want := len(order) - start; len(l.exc) != want {
			t.Fatalf("start %d: %d exceptions, want %d", start, len(l.exc), want)
		}
		for g := range l.exc {
			if l.exc[g] != full.exc[g] {
				t.Fatalf("start %d: exception %d = %+v, the full layout has %+v", start, g, l.exc[g], full.exc[g])
			}
		}
	}
	if _, err := NewLayout(order, len(order)+1, ra); err == nil {
		t.Fatal("start past the ops accepted")
	}
}

// TestLayoutExact pins the chunk numbering of Snapuserd::ReadMetadata on
// small hand-checked merge orders: Replace/Zero ops first with consecutive
// ids, two ids skipped before the first ordered batch (one when the first
// ordered op is met, one for the batch), one before every further batch,
// one after each read-ahead window, and metadata chunks (c mod 257 == 1)
// never used.
func TestLayoutExact(t *testing.T) {
	cp := func(dst, src uint64) cow.Op { return cow.Op{Type: cow.OpCopy, NewBlock: dst, Source: src} }
	rp := func(dst uint64) cow.Op { return cow.Op{Type: cow.OpReplace, NewBlock: dst} }
	// Merge order: copies first (file order), then Replace descending.
	order := []cow.Op{cp(10, 9), cp(11, 10), cp(20, 30), rp(5), rp(4)}
	many := make([]cow.Op, 300)
	for i := range many {
		many[i] = rp(uint64(1000 - i))
	}
	for _, tc := range []struct {
		name   string
		order  []cow.Op
		start  int
		ra     int
		want   []Exception // nil: only check the count and chunks
		chunks uint64
	}{
		{"no read-ahead", order, 0, 0, []Exception{{4, 2}, {5, 3}, {20, 6}, {11, 7}, {10, 9}}, 10},
		{"read-ahead 2", order, 0, 2, []Exception{{4, 2}, {5, 3}, {20, 6}, {11, 8}, {10, 10}}, 12},
		{"after 1 merged", order, 1, 0, []Exception{{4, 2}, {5, 3}, {20, 6}, {11, 7}}, 8},
		{"copies merged", order, 3, 0, []Exception{{4, 2}, {5, 3}}, 4},
		{"all merged", order, 5, 0, []Exception{}, 2},
		{"past area 0", many, 0, 0, nil, 2 + 300 + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := NewLayout(tc.order, tc.start, tc.ra)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != nil && fmt.Sprint(l.exc) != fmt.Sprint(tc.want) {
				t.Fatalf("exceptions %v, want %v", l.exc, tc.want)
			}
			if l.chunks != tc.chunks {
				t.Fatalf("%d chunks (%d sectors), want %d", l.chunks, l.chunks*8, tc.chunks)
			}
			for _, e := range l.exc {
				if IsMetadataChunk(e.NewChunk) {
					t.Fatalf("exception %+v uses a metadata chunk", e)
				}
			}
			if len(tc.order) == 300 && (l.exc[255].NewChunk != 257 || l.exc[256].NewChunk != 259 || l.areas != 2) {
				t.Fatalf("area boundary: exceptions 255/256 at chunks %d/%d, %d areas", l.exc[255].NewChunk, l.exc[256].NewChunk, l.areas)
			}
		})
	}
}
