package cow

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// Test-only image builders. They lay out v2 and v3 files by the rules of the
// spec (§2.6, §3.3) independently of the package's writers, so the reader
// can be tested against hand-made bytes.

// img is a growable byte image with WriteAt semantics.
type img []byte

func (m *img) at(off int64, p []byte) {
	if end := int(off) + len(p); end > len(*m) {
		*m = append(*m, make([]byte, end-len(*m))...)
	}
	copy((*m)[off:], p)
}

func hdrV2(clusterOps uint32, buffer uint32) Header {
	return Header{Magic: Magic, MajorVersion: 2, HeaderSize: HeaderV2Size, FooterSize: FooterSize,
		OpSize: OpV2Size, BlockSize: 4096, ClusterOps: clusterOps, BufferSize: buffer}
}

func hdrV1(clusterOps uint32) Header {
	return Header{Magic: Magic, MajorVersion: 1, HeaderSize: HeaderV1Size, FooterSize: FooterSize,
		OpSize: OpV2Size, BlockSize: 4096, ClusterOps: clusterOps}
}

// v2Builder emulates the v2 writer's layout: clusters of N slots (N−1 ops +
// a Cluster op), payloads after each cluster's op region, Finalize with an
// extra Cluster op when the current cluster has payload, footer in the next
// free slot.
type v2Builder struct {
	t       testing.TB
	h       Header
	m       img
	n       int64 // cluster_ops
	cstart  int64 // current cluster start (clustered) / next op pos (unclustered)
	inClust int64 // ops in current cluster
	payload int64 // payload bytes in current cluster
	numOps  int
	offsets []int64 // op offsets as written
	dataAt  []int64 // payload offset per op (-1 if none)
}

func newV2Builder(t testing.TB, h Header) *v2Builder {
	b := &v2Builder{t: t, h: h, n: int64(h.ClusterOps)}
	hb, err := h.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	b.m.at(0, hb)
	start := h.OpsStart()
	if start > int64(len(b.m)) {
		b.m.at(start-1, []byte{0})
	}
	b.cstart = start
	return b
}

func (b *v2Builder) nextOpPos() int64 {
	if b.n == 0 {
		return b.cstart
	}
	return b.cstart + b.inClust*OpV2Size
}

// add writes op (with payload data for Replace/Xor/Sequence) and returns its index.
func (b *v2Builder) add(op Op, data []byte) int {
	op.DataLength = uint32(len(data))
	pos := b.nextOpPos()
	var dpos int64 = -1
	if b.n == 0 {
		if len(data) > 0 {
			dpos = pos + OpV2Size
		}
		if op.Type == OpReplace || op.Type == OpSequence {
			op.Source = uint64(dpos)
		}
		b.m.at(pos, AppendOpV2(nil, op))
		b.m.at(pos+OpV2Size, data)
		b.cstart = pos + OpV2Size + int64(len(data))
	} else {
		if len(data) > 0 {
			dpos = b.cstart + b.n*OpV2Size + b.payload
		}
		if op.Type == OpReplace || op.Type == OpSequence {
			op.Source = uint64(dpos)
		}
		b.m.at(pos, AppendOpV2(nil, op))
		if len(data) > 0 {
			b.m.at(dpos, data)
		}
		b.payload += int64(len(data))
		b.inClust++
	}
	b.offsets = append(b.offsets, pos)
	b.dataAt = append(b.dataAt, dpos)
	b.numOps++
	idx := b.numOps - 1
	if b.n != 0 && b.inClust == b.n-1 {
		b.closeCluster()
	}
	return idx
}

// closeCluster emits the Cluster op in the next slot and starts a new cluster.
func (b *v2Builder) closeCluster() {
	pos := b.nextOpPos()
	unused := (b.n - b.inClust - 1) * OpV2Size
	b.m.at(pos, AppendOpV2(nil, Op{Type: OpCluster, Source: uint64(unused + b.payload)}))
	b.offsets = append(b.offsets, pos)
	b.dataAt = append(b.dataAt, -1)
	b.numOps++
	b.cstart = b.cstart + b.n*OpV2Size + b.payload
	b.inClust, b.payload = 0, 0
	// The op region of the new cluster exists (zeroed) once written.
}

// finalize writes the footer as the v2 writer's Finalize does and returns the
// image truncated after it.
func (b *v2Builder) finalize() []byte {
	if b.n != 0 && b.payload > 0 {
		b.closeCluster()
	}
	pos := b.nextOpPos()
	b.m.at(pos, AppendFooter(nil, Footer{NumOps: uint64(b.numOps), OpsSize: uint64(b.numOps) * OpV2Size}))
	return bytes.Clone(b.m[:pos+FooterSize])
}

// bytes returns the image as it is now (no footer: a torn or unfinished file).
func (b *v2Builder) bytes() []byte { return bytes.Clone(b.m) }

func block(fill byte) []byte { return bytes.Repeat([]byte{fill}, 4096) }

func seqPayload(blocks ...uint32) []byte {
	var p []byte
	for _, b := range blocks {
		p = binary.LittleEndian.AppendUint32(p, b)
	}
	return p
}

// v3Image builds a v3 file: header, scratch, sequence, resume points, op
// region of opCountMax slots, data region with payloads in op order.
type v3Image struct {
	h      Header
	seq    []uint32
	resume []ResumePoint // written at RES (up to resume_point_max)
	ops    []Op          // Replace sources are assigned from the data cursor
	data   [][]byte      // payload per op (nil for none)
}

func newV3Header(opCountMax uint64, alg Compression, buffer uint32) Header {
	return Header{Magic: Magic, MajorVersion: 3, HeaderSize: HeaderV3Size, OpSize: OpV3Size,
		BlockSize: 4096, BufferSize: buffer, ResumePointMax: NumResumePoints,
		OpCountMax: opCountMax, CompressionAlgorithm: alg, MaxCompressionSize: 65536}
}

func (v *v3Image) build(t testing.TB) []byte {
	h := v.h
	h.SequenceDataCount = uint64(len(v.seq))
	if h.OpCount == 0 {
		h.OpCount = uint64(len(v.ops))
	}
	var m img
	hb, err := h.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	m.at(0, hb)
	m.at(h.SequenceOffset(), seqPayload(v.seq...))
	for i, rp := range v.resume {
		m.at(h.ResumeOffset()+int64(i)*ResumePointSize, AppendResumePoint(nil, rp))
	}
	cursor := h.DataOffset()
	for i, op := range v.ops {
		var d []byte
		if i < len(v.data) {
			d = v.data[i]
		}
		op.DataLength = uint32(len(d))
		if op.Type == OpReplace {
			op.Source = uint64(cursor)
		}
		m.at(h.OpOffset(uint64(i)), AppendOpV3(nil, op))
		m.at(cursor, d)
		cursor += int64(len(d))
	}
	if int64(len(m)) < h.OpOffset(uint64(len(v.ops))) {
		m.at(h.OpOffset(uint64(len(v.ops)))-1, []byte{0})
	}
	return m
}

func parseBytes(t testing.TB, b []byte, opts *ReaderOptions) (*Reader, error) {
	t.Helper()
	return NewReader(bytes.NewReader(b), int64(len(b)), opts)
}

func mustParse(t testing.TB, b []byte, opts *ReaderOptions) *Reader {
	t.Helper()
	r, err := parseBytes(t, b, opts)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return r
}

func labelOpt(l uint64) *ReaderOptions { return &ReaderOptions{Label: &l} }

// newBlocks lists new_block of ops.
func newBlocks(ops []Op) []uint64 {
	out := make([]uint64, len(ops))
	for i, o := range ops {
		out[i] = o.NewBlock
	}
	return out
}
