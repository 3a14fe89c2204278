package cow

import (
	"fmt"
	"io"
)

// Describe writes a human-readable map of the image's regions (after
// pebble's Layout.Describe): header, scratch, and for v1/v2 every cluster
// (op slots, payload bytes) and the footer, for v3 the sequence, resume, op
// and data regions. Offsets are absolute, in hex.
func (r *Reader) Describe(w io.Writer) error {
	h := &r.hdr
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("%-10s %#10x %10d bytes  v%d.%d\n", "header", 0, h.HeaderSize, h.MajorVersion, h.MinorVersion)
	if h.HasScratch() {
		p("%-10s %#10x %10d bytes\n", "scratch", h.ScratchOffset(), h.BufferSize)
	}
	if h.Version().FixedRegions() {
		p("%-10s %#10x %10d bytes  %d entries\n", "sequence", h.SequenceOffset(), h.SequenceDataCount*4, h.SequenceDataCount)
		p("%-10s %#10x %10d bytes  %d slots, resume_point_count %d\n", "resume", h.ResumeOffset(),
			uint64(h.ResumePointMax)*ResumePointSize, h.ResumePointMax, h.ResumePointCount)
		p("%-10s %#10x %10d bytes  %d of %d slots used\n", "ops", h.OpOffset(0), h.OpCountMax*OpV3Size, len(r.ops), h.OpCountMax)
		data := h.DataOffset()
		p("%-10s %#10x %10d bytes  %s\n", "data", data, r.dataCursor-data, r.compression)
		p("%-10s %#10x\n", "end", r.size)
		return nil
	}
	n := int64(h.ClusterOps)
	if n == 0 {
		var payload int64
		for i := range r.ops {
			if r.ops[i].Type == OpReplace || r.ops[i].Type == OpXor {
				payload += int64(r.ops[i].DataLength)
			}
		}
		p("%-10s %#10x %10d bytes  %d ops (unclustered), %d payload bytes\n", "stream", h.OpsStart(),
			r.endOffset-h.OpsStart(), len(r.ops), payload)
	} else {
		cl, first, payload := 0, 0, int64(0)
		flush := func(last int) {
			if last < first {
				return
			}
			start := r.opOffsets[first]
			p("%-10s %#10x %10d bytes  %d ops, %d payload bytes at %#x\n", fmt.Sprintf("cluster %d", cl),
				start, n*OpV2Size+payload, last-first+1, payload, start+n*OpV2Size)
			cl++
		}
		for i := range r.ops {
			payload += int64(r.ops[i].DataLength)
			if r.ops[i].Type == OpCluster {
				flush(i)
				first, payload = i+1, 0
			}
		}
		flush(len(r.ops) - 1)
	}
	if r.hasFooter {
		p("%-10s %#10x %10d bytes  num_ops %d, ops_size %d\n", "footer", r.endOffset, FooterSize, r.footer.NumOps, r.footer.OpsSize)
	}
	p("%-10s %#10x\n", "end", r.size)
	return nil
}
