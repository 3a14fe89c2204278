package cow

import (
	"testing"
)

// FuzzWriterRoundTrip decodes the input into a writer configuration and a
// script of calls (copies, raw and XOR runs, zeros, labels, sequence data),
// writes it with the v2 or v3 writer and requires the reader to return
// exactly what was written. Calls the writer rejects are dropped from the
// expected script; a rejection must never corrupt what was already written.
func FuzzWriterRoundTrip(f *testing.F) {
	f.Add([]byte{0, 0, 1, 10, 20, 2, 2, 3, 5, 3, 4, 7, 6, 9, 4, 1})
	f.Add([]byte{1, 3, 2, 2, 50, 5, 30, 6, 40, 2, 3, 100, 4, 4, 9, 8, 1, 1})
	f.Add([]byte{2, 7, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add([]byte{3, 1, 5, 12, 255, 4, 0, 1, 2, 9, 2, 2, 200})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 2 || len(in) > 256 {
			return
		}
		algs := []Compression{CompressionNone, CompressionLz4, CompressionZstd, CompressionSnappy}
		c := rtConfig{alg: algs[in[0]>>1&3], v3: in[0]&1 == 1}
		if c.v3 {
			c.factor = 4096 << (in[1] % 7)
		} else {
			c.clusterOps = []uint32{0, 2, 3, 5, 1024}[in[1]%5]
		}
		in = in[2:]
		next := func() byte {
			if len(in) == 0 {
				return 0
			}
			b := in[0]
			in = in[1:]
			return b
		}
		used := map[uint64]bool{}
		free := func(b, n uint64) bool {
			for i := range n {
				if used[b+i] {
					return false
				}
			}
			for i := range n {
				used[b+i] = true
			}
			return true
		}
		var steps []wstep
		if next()&1 == 1 && c.withSeq() {
			n := next() % 8
			var seq []uint32
			for i := range n {
				seq = append(seq, uint32(200+i)) // copies into 200.. may follow
			}
			steps = append(steps, wstep{kind: OpSequence, seq: seq})
		}
		for len(in) > 0 {
			op, b, n := next()%6, uint64(next()), uint64(next()%20+1)
			switch op {
			case 0:
				if free(b, n) {
					steps = append(steps, wstep{kind: OpCopy, newBlock: b, old: b + 7, n: n})
				}
			case 1:
				if free(b, n) {
					steps = append(steps, wstep{kind: OpReplace, newBlock: b, data: testUnit(b, int(n)*4096)})
				}
			case 2:
				if n = n%3 + 1; free(b, n) {
					steps = append(steps, wstep{kind: OpXor, newBlock: b, old: b + 1, offset: uint16(b * 13 % 4096), data: testUnit(b+1000, int(n)*4096)})
				}
			case 3:
				if free(b, n) {
					steps = append(steps, wstep{kind: OpZero, newBlock: b, n: n})
				}
			default:
				steps = append(steps, wstep{kind: OpLabel, label: b})
			}
		}
		// Sequence entries must name ordered ops: add copies for them.
		for _, s := range steps {
			if s.kind == OpSequence {
				for _, blk := range s.seq {
					if free(uint64(blk), 1) {
						steps = append(steps, wstep{kind: OpCopy, newBlock: uint64(blk), old: 500, n: 1})
					} else {
						return // a data op already claims it; not an interesting script
					}
				}
			}
		}
		if len(used) > 900 { // v3 op_count_max is 1000 in rtConfig
			return
		}
		mf := newMemFile(nil)
		w, err := c.newWriter(mf)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range steps {
			if err := s.apply(w); err != nil {
				t.Fatalf("step %d (%v): %v", i, s.kind, err)
			}
		}
		if err := w.Finalize(); err != nil {
			t.Fatal(err)
		}
		if w.Size() != mf.Size() {
			t.Fatalf("Size() %d, file %d", w.Size(), mf.Size())
		}
		checkOps(t, c, mf.Bytes(), steps)
	})
}
