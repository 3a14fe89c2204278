package cow

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// A script is a list of writer calls; the same script drives both writer
// versions, and expect derives what a reader must find.
type wstep struct {
	kind     OpType // OpCopy, OpReplace, OpXor, OpZero, OpLabel, OpSequence
	newBlock uint64
	old      uint64 // Copy: source block; Xor: source block
	n        uint64 // Copy/Zero: blocks
	offset   uint16 // Xor
	data     []byte // Replace/Xor
	label    uint64
	seq      []uint32
}

func (s wstep) apply(w Writer) error {
	switch s.kind {
	case OpCopy:
		return w.AddCopy(s.newBlock, s.old, s.n)
	case OpReplace:
		return w.AddRawBlocks(s.newBlock, s.data)
	case OpXor:
		return w.AddXorBlocks(s.newBlock, s.data, s.old, s.offset)
	case OpZero:
		return w.AddZeroBlocks(s.newBlock, s.n)
	case OpLabel:
		return w.AddLabel(s.label)
	case OpSequence:
		return w.AddSequenceData(s.seq)
	}
	return fmt.Errorf("bad step %v", s.kind)
}

// blockExpect is what one destination block must decode to.
type blockExpect struct {
	typ    OpType
	source uint64 // Copy: block; Xor: byte offset
	data   []byte
}

// expect maps destination blocks to their expected op (first op per block
// wins, as AOSP's block_map).
func expect(steps []wstep, bs int) map[uint64]blockExpect {
	m := map[uint64]blockExpect{}
	put := func(b uint64, e blockExpect) {
		if _, ok := m[b]; !ok {
			m[b] = e
		}
	}
	for _, s := range steps {
		switch s.kind {
		case OpCopy:
			for i := range s.n {
				put(s.newBlock+i, blockExpect{typ: OpCopy, source: s.old + i})
			}
		case OpZero:
			for i := range s.n {
				put(s.newBlock+i, blockExpect{typ: OpZero})
			}
		case OpReplace, OpXor:
			for i := 0; i*bs < len(s.data); i++ {
				e := blockExpect{typ: s.kind, data: s.data[i*bs : (i+1)*bs]}
				if s.kind == OpXor {
					e.source = s.old*uint64(bs) + uint64(s.offset) + uint64(i*bs)
				}
				put(s.newBlock+uint64(i), e)
			}
		}
	}
	return m
}

// standardScript exercises every op kind: sequence data for the ordered
// ops, copies, a long Replace run (71 blocks: every v3 factor up to 256 KiB
// plus a tail), single blocks, XOR with an unaligned offset, zero runs and
// labels between groups.
func standardScript(withSeq bool) []wstep {
	var s []wstep
	if withSeq {
		s = append(s, wstep{kind: OpSequence, seq: []uint32{11, 10, 300, 301}})
	}
	run := make([]byte, 0, 71*4096)
	for i := range uint64(71) {
		if i%5 == 4 {
			run = append(run, randomBytes(i, 4096)...) // incompressible blocks
		} else {
			run = append(run, testUnit(i, 4096)...)
		}
	}
	s = append(s,
		wstep{kind: OpCopy, newBlock: 10, old: 20, n: 2},
		wstep{kind: OpXor, newBlock: 300, old: 7, offset: 1000, data: testUnit(300, 2*4096)},
		wstep{kind: OpLabel, label: 0},
		wstep{kind: OpReplace, newBlock: 100, data: run},
		wstep{kind: OpLabel, label: 1},
		wstep{kind: OpZero, newBlock: 200, n: 9},
		wstep{kind: OpReplace, newBlock: 2, data: testUnit(2, 3*4096)},
		wstep{kind: OpLabel, label: 2},
		wstep{kind: OpReplace, newBlock: 400, data: make([]byte, 4096)},
		wstep{kind: OpLabel, label: EndOfInstallLabel},
	)
	return s
}

type rtConfig struct {
	v3         bool
	alg        Compression
	clusterOps uint32 // v2; 0 = unclustered
	factor     uint32 // v3
}

func (c rtConfig) String() string {
	if c.v3 {
		return fmt.Sprintf("v3/%v/factor=%s", c.alg, itoa(int(c.factor)))
	}
	return fmt.Sprintf("v2/%v/cluster=%d", c.alg, c.clusterOps)
}

func (c rtConfig) opts() WriterOptions {
	o := WriterOptions{Compression: c.alg, AllowNonstandard: true, NoScratch: true, NumMergeOps: 0}
	if c.alg == CompressionBrotli {
		// Quality 11 (the default) costs ~100 ms per 64 KiB unit; the
		// format is the same at any quality. TestV2CompressionStamp and
		// TestCompressRoundTrip cover the default level.
		o.CompressionLevel, o.CompressionLevelSet = 5, true
	}
	if c.v3 {
		o.CompressionFactor = c.factor
		o.OpCountMax = 1000
		o.BatchSize = 37 // odd size: runs get cut at batch boundaries
	} else {
		o.ClusterOps = c.clusterOps
		o.Unclustered = c.clusterOps == 0
	}
	return o
}

func (c rtConfig) newWriter(f File) (Writer, error) {
	if c.v3 {
		return NewWriterV3(f, c.opts())
	}
	return NewWriterV2(f, c.opts())
}

func (c rtConfig) openWriter(f File, label uint64) (Writer, error) {
	if c.v3 {
		return OpenWriterV3(f, c.opts(), label)
	}
	return OpenWriterV2(f, c.opts(), label)
}

func (c rtConfig) withSeq() bool { return c.v3 || c.clusterOps != 0 }

func writeScript(t *testing.T, c rtConfig, f File, steps []wstep) Writer {
	t.Helper()
	w, err := c.newWriter(f)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range steps {
		if err := s.apply(w); err != nil {
			t.Fatalf("step %d (%v): %v", i, s.kind, err)
		}
	}
	return w
}

// checkImage parses img and checks every op against the script, and that
// the merge order is safe.
func checkImage(t testing.TB, c rtConfig, img []byte, steps []wstep) *Reader {
	t.Helper()
	r := checkOps(t, c, img, steps)
	if err := r.VerifyMergeOps(); err != nil {
		t.Fatalf("VerifyMergeOps: %v", err)
	}
	return r
}

// checkOps parses img and checks every op against the script.
func checkOps(t testing.TB, c rtConfig, img []byte, steps []wstep) *Reader {
	t.Helper()
	r, err := NewReader(bytes.NewReader(img), int64(len(img)), &ReaderOptions{AllowNonstandard: true})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	bs := 4096
	want := expect(steps, bs)
	seen := map[uint64]bool{}
	buf := make([]byte, bs)
	var labels []uint64
	for i, op := range r.Ops() {
		switch op.Type {
		case OpLabel:
			labels = append(labels, op.Source)
			continue
		case OpCluster, OpSequence:
			if c.v3 {
				t.Fatalf("op %d: %v in a v3 op region", i, op.Type)
			}
			continue
		}
		for k := range op.Blocks() {
			b := op.NewBlock + k
			e, ok := want[b]
			if !ok || seen[b] {
				t.Fatalf("op %d: unexpected or duplicate block %d (%v)", i, b, op)
			}
			seen[b] = true
			if e.typ != op.Type {
				t.Fatalf("op %d block %d: type %v, want %v", i, b, op.Type, e.typ)
			}
			switch op.Type {
			case OpCopy, OpXor:
				if op.Source != e.source {
					t.Fatalf("op %d block %d: source %d, want %d", i, b, op.Source, e.source)
				}
			}
			if op.Type == OpReplace || op.Type == OpXor {
				n, err := r.ReadOpData(i, buf, int(k)*bs)
				if err != nil || n != bs || !bytes.Equal(buf, e.data) {
					t.Fatalf("op %d block %d: ReadData n=%d err=%v equal=%v", i, b, n, err, bytes.Equal(buf, e.data))
				}
			}
		}
		if op.Type == OpXor && op.FactorShift != 0 {
			t.Fatalf("op %d: multi-block xor", i)
		}
		if op.Type == OpReplace {
			maxShift := 0
			if c.v3 {
				maxShift = log2(uint64(c.factor / 4096))
			}
			if int(op.FactorShift) > maxShift {
				t.Fatalf("op %d: factor shift %d above %d", i, op.FactorShift, maxShift)
			}
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("%d blocks found, want %d", len(seen), len(want))
	}
	var wantLabels, wantSeq []uint64
	for _, s := range steps {
		if s.kind == OpLabel {
			wantLabels = append(wantLabels, s.label)
		}
		if s.kind == OpSequence {
			for _, b := range s.seq {
				wantSeq = append(wantSeq, uint64(b))
			}
		}
	}
	if !c.v3 && fmt.Sprint(labels) != fmt.Sprint(wantLabels) {
		t.Fatalf("labels %v, want %v", labels, wantLabels)
	}
	var gotSeq []uint64
	for _, b := range r.SequenceData() {
		gotSeq = append(gotSeq, uint64(b))
	}
	if fmt.Sprint(gotSeq) != fmt.Sprint(wantSeq) {
		t.Fatalf("sequence data %v, want %v", gotSeq, wantSeq)
	}
	// Merge order: the sequence (or, without one, the ordered ops) first.
	mo := r.MergeOrder()
	for i, b := range wantSeq {
		if i >= len(mo) || mo[i].NewBlock != b {
			t.Fatalf("merge order starts %v, want sequence %v", mo[:min(len(mo), len(wantSeq))], wantSeq)
		}
	}
	if c.v3 && r.Compression() != c.alg {
		t.Fatalf("file compression %v, want %v", r.Compression(), c.alg)
	}
	return r
}

func rtConfigs() []rtConfig {
	var cs []rtConfig
	for _, alg := range allCompressions {
		for _, n := range []uint32{0, 2, 5, 1024} {
			cs = append(cs, rtConfig{alg: alg, clusterOps: n})
		}
		for f := uint32(4096); f <= MaxCompressionSize; f <<= 1 {
			cs = append(cs, rtConfig{v3: true, alg: alg, factor: f})
		}
	}
	return cs
}

// TestRoundTrip: v2 and v3 × every codec × cluster sizes / compression
// factors, with sequence data, labels, XOR and every op kind.
func TestRoundTrip(t *testing.T) {
	for _, c := range rtConfigs() {
		t.Run(c.String(), func(t *testing.T) {
			t.Parallel()
			steps := standardScript(c.withSeq())
			f := newMemFile(nil)
			w := writeScript(t, c, f, steps)
			if err := w.Finalize(); err != nil {
				t.Fatal(err)
			}
			if w.Size() != f.Size() {
				t.Fatalf("Size() %d, file %d", w.Size(), f.Size())
			}
			checkImage(t, c, f.Bytes(), steps)
		})
	}
}

// TestUnclusteredRejectsSequence: cluster_ops 0 cannot carry sequence
// payloads (§2.6 quirk), so the writer refuses instead of corrupting.
func TestUnclusteredRejectsSequence(t *testing.T) {
	w, err := NewWriterV2(newMemFile(nil), WriterOptions{Unclustered: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddSequenceData([]uint32{1}); err == nil {
		t.Fatal("accepted")
	}
}

// TestV2SequenceSplit: more than 2048 entries are split over Sequence ops.
func TestV2SequenceSplit(t *testing.T) {
	f := newMemFile(nil)
	w, err := NewWriterV2(f, WriterOptions{ClusterOps: 4, NoScratch: true})
	if err != nil {
		t.Fatal(err)
	}
	seq := make([]uint32, 5000)
	for i := range seq {
		seq[i] = uint32(i)
	}
	if err := w.AddSequenceData(seq); err != nil {
		t.Fatal(err)
	}
	if err := w.AddCopy(0, 10000, 5000); err != nil {
		t.Fatal(err)
	}
	if err := w.Finalize(); err != nil {
		t.Fatal(err)
	}
	r, err := f.reader(nil)
	if err != nil {
		t.Fatal(err)
	}
	var lens []uint32
	for _, op := range r.Ops() {
		if op.Type == OpSequence {
			lens = append(lens, op.DataLength)
		}
	}
	if fmt.Sprint(lens) != "[8192 8192 3616]" {
		t.Fatalf("sequence op lengths %v", lens)
	}
	if len(r.SequenceData()) != 5000 || r.SequenceData()[4999] != 4999 {
		t.Fatal("sequence data mismatch")
	}
}

// TestResumeAfterCrash: write up to a label, keep writing, crash; reopen at
// the label, redo the rest, finalize. The result must equal a straight
// write — byte for byte when the crash dropped unsynced writes (v2 and v3)
// or for v2 even when every stale write survived; v3 keeps stale op slots
// beyond op_count there (as AOSP), so it is compared by content.
func TestResumeAfterCrash(t *testing.T) {
	var cfgs []rtConfig
	for _, alg := range []Compression{CompressionNone, CompressionLz4, CompressionGz} {
		for _, n := range []uint32{0, 2, 5, 1024} {
			cfgs = append(cfgs, rtConfig{alg: alg, clusterOps: n})
		}
		for _, f := range []uint32{4096, 65536} {
			cfgs = append(cfgs, rtConfig{v3: true, alg: alg, factor: f})
		}
	}
	for _, c := range cfgs {
		steps := standardScript(c.withSeq())
		for li, s := range steps {
			if s.kind != OpLabel || s.label == EndOfInstallLabel {
				continue
			}
			for _, keepAll := range []bool{false, true} {
				name := fmt.Sprintf("%v/label=%d/keep-unsynced=%v", c, s.label, keepAll)
				t.Run(name, func(t *testing.T) {
					ref := newMemFile(nil)
					rw := writeScript(t, c, ref, steps)
					if err := rw.Finalize(); err != nil {
						t.Fatal(err)
					}

					f := newMemFile(nil)
					w := writeScript(t, c, f, steps[:len(steps)-1]) // crash before the end label
					if c.v3 {
						w.(*WriterV3).flush() // stale ops reach the file, header untouched
					}
					var crashed *memFile
					if keepAll {
						crashed = f.clone()
					} else {
						crashed = f.crashClone()
					}
					w2, err := c.openWriter(crashed, s.label)
					if err != nil {
						t.Fatalf("reopen at label %d: %v", s.label, err)
					}
					for i, s2 := range steps[li+1:] {
						if err := s2.apply(w2); err != nil {
							t.Fatalf("resumed step %d: %v", i, err)
						}
					}
					if err := w2.Finalize(); err != nil {
						t.Fatal(err)
					}
					got, want := crashed.Bytes(), ref.Bytes()
					if c.v3 {
						// resume_point_count keeps counting across the
						// resume (§3.4 quirk): labels at the crash + redone.
						redone := 0
						for _, s2 := range steps[li+1:] {
							if s2.kind == OpLabel {
								redone++
							}
						}
						hc, hr := decodeHeader(got), decodeHeader(want)
						if int(hc.ResumePointCount) != int(hr.ResumePointCount)-1+redone {
							t.Fatalf("resume_point_count %d after resume (straight write %d, %d labels redone)",
								hc.ResumePointCount, hr.ResumePointCount, redone)
						}
						copy(got[46:50], want[46:50])
					}
					if !c.v3 || !keepAll {
						if !bytes.Equal(got, want) {
							t.Fatalf("resumed file differs from a straight write (%d vs %d bytes)", crashed.Size(), ref.Size())
						}
					}
					checkImage(t, c, crashed.Bytes(), steps)
				})
			}
		}
	}
}

// TestTornWrittenFiles truncates finalized images at every op boundary (and in
// the middle of ops): parsing without a label must fail cleanly (unless the
// cut is after the footer), and parsing at a label must either fail cleanly
// or yield exactly the ops up to that label.
func TestTornWrittenFiles(t *testing.T) {
	for _, c := range []rtConfig{
		{alg: CompressionNone, clusterOps: 0}, {alg: CompressionLz4, clusterOps: 2},
		{alg: CompressionZstd, clusterOps: 5}, {alg: CompressionGz, clusterOps: 1024},
		{v3: true, alg: CompressionNone, factor: 4096}, {v3: true, alg: CompressionLz4, factor: 65536},
	} {
		t.Run(c.String(), func(t *testing.T) {
			steps := standardScript(c.withSeq())
			f := newMemFile(nil)
			w := writeScript(t, c, f, steps)
			if err := w.Finalize(); err != nil {
				t.Fatal(err)
			}
			img := f.Bytes()
			full, err := f.reader(nil)
			if err != nil {
				t.Fatal(err)
			}
			// Reference: ops up to each label from the complete file.
			labelOps := map[uint64][]Op{}
			var labels []uint64
			for _, s := range steps {
				if s.kind == OpLabel {
					labels = append(labels, s.label)
					r, err := f.reader(labelOpt(s.label))
					if err != nil {
						t.Fatalf("label %d: %v", s.label, err)
					}
					labelOps[s.label] = r.Ops()
				}
			}
			cuts := map[int64]bool{int64(len(img)) - 1: true, HeaderV2Size: true, 10: true}
			for i := range full.Ops() {
				off := full.OpOffset(i)
				cuts[off], cuts[off+1], cuts[off+OpSizeOf(c)] = true, true, true
			}
			if c.v3 {
				h := full.Header()
				cuts[h.ResumeOffset()+8] = true
				cuts[h.DataOffset()] = true
				cuts[h.DataOffset()+4096] = true
			}
			for cut := range cuts {
				if cut < 0 || cut >= int64(len(img)) {
					continue
				}
				torn := img[:cut]
				rd := bytes.NewReader(torn)
				r, err := NewReader(rd, cut, &ReaderOptions{AllowNonstandard: true})
				if err == nil && !c.v3 {
					t.Fatalf("cut at %#x: v2 file without footer parsed (%d ops)", cut, len(r.Ops()))
				}
				if err == nil && c.v3 {
					// v3 trusts op_count; payload reads must then fail cleanly.
					buf := make([]byte, 4096)
					for i, op := range r.Ops() {
						if op.Type == OpReplace || op.Type == OpXor {
							if _, err := r.ReadOpData(i, buf, 0); err != nil && !errors.Is(err, ErrCorrupt) {
								t.Fatalf("cut at %#x: op %d: unclean error %v", cut, i, err)
							}
						}
					}
				}
				for _, l := range labels {
					lo := labelOpt(l)
					lo.AllowNonstandard = true
					r, err := NewReader(rd, cut, lo)
					if err != nil {
						continue
					}
					got, want := r.Ops(), labelOps[l]
					if len(got) != len(want) {
						t.Fatalf("cut at %#x label %d: %d ops, want %d", cut, l, len(got), len(want))
					}
					for i := range got {
						if got[i] != want[i] {
							t.Fatalf("cut at %#x label %d: op %d = %v, want %v", cut, l, i, got[i], want[i])
						}
					}
				}
			}
		})
	}
}

// OpSizeOf is the op record size for a config.
func OpSizeOf(c rtConfig) int64 {
	if c.v3 {
		return OpV3Size
	}
	return OpV2Size
}

// TestResumeAfterCrashAnywhere crashes after every step of the script
// (keeping only synced writes, or every write), reopens at the last label
// written before the crash — what update_engine resumes from — redoes the
// rest and requires the same result as an uninterrupted write: identical
// bytes (v2; v3 up to resume_point_count), or identical content (v3 with
// stale unsynced op slots).
func TestResumeAfterCrashAnywhere(t *testing.T) {
	for _, c := range []rtConfig{
		{alg: CompressionNone, clusterOps: 0}, {alg: CompressionLz4, clusterOps: 5}, {alg: CompressionZstd, clusterOps: 1024},
		{v3: true, alg: CompressionNone, factor: 4096}, {v3: true, alg: CompressionLz4, factor: 65536},
	} {
		t.Run(c.String(), func(t *testing.T) {
			steps := standardScript(c.withSeq())
			ref := newMemFile(nil)
			rw := writeScript(t, c, ref, steps)
			if err := rw.Finalize(); err != nil {
				t.Fatal(err)
			}
			want := ref.Bytes()
			for k := range len(steps) - 1 {
				last := -1
				for i := 0; i <= k; i++ {
					if steps[i].kind == OpLabel {
						last = i
					}
				}
				if last < 0 {
					continue // no resume point yet: an update restarts from scratch
				}
				for _, keepAll := range []bool{false, true} {
					f := newMemFile(nil)
					w := writeScript(t, c, f, steps[:k+1])
					if c.v3 {
						w.(*WriterV3).flush()
					}
					crashed := f.crashClone()
					if keepAll {
						crashed = f.clone()
					}
					w2, err := c.openWriter(crashed, steps[last].label)
					if err != nil {
						t.Fatalf("crash after step %d (keep=%v): reopen at label %d: %v", k, keepAll, steps[last].label, err)
					}
					for _, s := range steps[last+1:] {
						if err := s.apply(w2); err != nil {
							t.Fatal(err)
						}
					}
					if err := w2.Finalize(); err != nil {
						t.Fatal(err)
					}
					got := crashed.Bytes()
					if c.v3 {
						copy(got[46:50], want[46:50]) // resume_point_count keeps counting (§3.4)
					}
					if (!c.v3 || !keepAll) && !bytes.Equal(got, want) {
						t.Fatalf("crash after step %d (keep=%v), resume at label %d: result differs (%d vs %d bytes)",
							k, keepAll, steps[last].label, len(got), len(want))
					}
					checkImage(t, c, got, steps)
				}
			}
		})
	}
}

// TestReaderRejectsNonstandard: files written with the non-AOSP compression
// ids parse only when the reader opts in, as the writer requires.
func TestReaderRejectsNonstandard(t *testing.T) {
	for _, c := range []rtConfig{{alg: CompressionSnappy, clusterOps: 2}, {v3: true, alg: CompressionXz, factor: 4096}} {
		t.Run(c.String(), func(t *testing.T) {
			f := newMemFile(nil)
			w := writeScript(t, c, f, standardScript(false))
			if err := w.Finalize(); err != nil {
				t.Fatal(err)
			}
			img := f.Bytes()
			_, err := NewReader(bytes.NewReader(img), int64(len(img)), nil)
			if err == nil || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "non-AOSP") {
				t.Fatalf("default reader: %v, want a non-AOSP compression error", err)
			}
			if _, err := NewReader(bytes.NewReader(img), int64(len(img)), &ReaderOptions{AllowNonstandard: true}); err != nil {
				t.Fatalf("with AllowNonstandard: %v", err)
			}
		})
	}
}
