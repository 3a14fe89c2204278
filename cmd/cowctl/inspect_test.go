package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vabc-go/vabc/cow"
)

type tOp struct {
	op   cow.Op
	data []byte
}

// buildV2 lays out a clustered v2 image by hand (§2.6): one cluster of
// len(ops)+2 slots holding the ops and a closing Cluster op, the payloads,
// and the footer at the start of the next cluster.
func buildV2(t *testing.T, numMerge uint64, ops []tOp) []byte {
	t.Helper()
	n := uint32(len(ops) + 2)
	h := cow.Header{Magic: cow.Magic, MajorVersion: 2, HeaderSize: cow.HeaderV2Size, FooterSize: cow.FooterSize,
		OpSize: cow.OpV2Size, BlockSize: 4096, ClusterOps: n, NumMergeOps: numMerge}
	out, err := h.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	dataStart := len(out) + int(n)*cow.OpV2Size
	var payload []byte
	for _, o := range ops {
		op := o.op
		op.DataLength = uint32(len(o.data))
		if op.Type == cow.OpReplace || op.Type == cow.OpSequence {
			op.Source = uint64(dataStart + len(payload))
		}
		payload = append(payload, o.data...)
		out = cow.AppendOpV2(out, op)
	}
	unused := (int(n) - len(ops) - 1) * cow.OpV2Size
	out = cow.AppendOpV2(out, cow.Op{Type: cow.OpCluster, Source: uint64(unused + len(payload))})
	out = append(out, make([]byte, unused)...)
	out = append(out, payload...)
	num := uint64(len(ops) + 1)
	return cow.AppendFooter(out, cow.Footer{NumOps: num, OpsSize: num * cow.OpV2Size})
}

// buildV3 lays out a v3 image (§3.3) without scratch.
func buildV3(t *testing.T, seq []uint32, ops []tOp) []byte {
	t.Helper()
	h := cow.Header{Magic: cow.Magic, MajorVersion: 3, HeaderSize: cow.HeaderV3Size, OpSize: cow.OpV3Size,
		BlockSize: 4096, SequenceDataCount: uint64(len(seq)), ResumePointMax: 4, OpCount: uint64(len(ops)),
		OpCountMax: uint64(len(ops)), CompressionAlgorithm: cow.CompressionNone, MaxCompressionSize: 4096}
	out, err := h.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range seq {
		out = binary.LittleEndian.AppendUint32(out, s)
	}
	out = append(out, make([]byte, 4*cow.ResumePointSize)...)
	cursor := h.DataOffset()
	var payload []byte
	for _, o := range ops {
		op := o.op
		op.DataLength = uint32(len(o.data))
		if op.Type == cow.OpReplace {
			op.Source = uint64(cursor)
		}
		cursor += int64(len(o.data))
		payload = append(payload, o.data...)
		out = cow.AppendOpV3(out, op)
	}
	return append(out, payload...)
}

func fill(b byte) []byte { return bytes.Repeat([]byte{b}, 4096) }

func seqBytes(v ...uint32) []byte {
	var p []byte
	for _, x := range v {
		p = binary.LittleEndian.AppendUint32(p, x)
	}
	return p
}

func sampleV2(t *testing.T) []byte {
	return buildV2(t, 1, []tOp{
		{cow.Op{Type: cow.OpSequence}, seqBytes(20, 10)},
		{cow.Op{Type: cow.OpCopy, NewBlock: 10, Source: 3}, nil},
		{cow.Op{Type: cow.OpXor, NewBlock: 20, Source: 4096*4 + 9}, fill('x')},
		{cow.Op{Type: cow.OpLabel, Source: 0}, nil},
		{cow.Op{Type: cow.OpReplace, NewBlock: 7}, fill('r')},
		{cow.Op{Type: cow.OpZero, NewBlock: 2}, nil},
		{cow.Op{Type: cow.OpLabel, Source: 1}, nil},
	})
}

func writeTemp(t *testing.T, b []byte) string {
	p := filepath.Join(t.TempDir(), "img.cow")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func runCmd(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(t.Context(), args, &o, &e)
	return o.String(), e.String(), code
}

type report struct {
	Header         map[string]any    `json:"header"`
	Footer         *jsonFooter       `json:"footer"`
	Ops            []jsonOp          `json:"ops"`
	Counts         map[string]uint64 `json:"counts"`
	MergeOrderOK   *bool             `json:"merge_order_ok"`
	MergeOpStart   uint64            `json:"merge_op_start"`
	LastLabel      *uint64           `json:"last_label"`
	DecompressErrs []string          `json:"decompress_errors"`
}

func inspectJSON(t *testing.T, args ...string) report {
	t.Helper()
	out, errOut, code := runCmd(t, append([]string{"inspect", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var r report
	dec := json.NewDecoder(strings.NewReader(out))
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, out)
	}
	var obj map[string]json.RawMessage
	if err := dec.Decode(&obj); err != nil || dec.More() {
		t.Fatalf("output is not exactly one JSON object: %v", err)
	}
	return r
}

func types(ops []jsonOp) []string {
	var s []string
	for _, o := range ops {
		s = append(s, o.Type)
	}
	return s
}

func blocksOf(ops []jsonOp) []uint64 {
	var s []uint64
	for _, o := range ops {
		s = append(s, o.NewBlock)
	}
	return s
}

func TestInspectText(t *testing.T) {
	p := writeTemp(t, sampleV2(t))
	out, errOut, code := runCmd(t, "inspect", "--show-ops", "--verify-merge-sequence", p)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"Version: 2.0\n", "Header size: 38\n", "Footer size: 84\n", "Block size: 4096\n", "Merge ops: 1\n",
		"Readahead buffer: 0 bytes\n", "Footer: ops usage: 160 bytes\n", "Footer: op count: 8\n", "Parse time: ",
		"Listing op stream:", "Merge sequence is consistent.", "Data ops: 4\n", "Replace ops: 1\n",
		"Zero ops: 1\n", "Copy ops: 1\n", "Xor ops: 1\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, _, _ = runCmd(t, "inspect", "--layout", p)
	if !strings.Contains(out, "Layout:\nheader") || !strings.Contains(out, "footer ") {
		t.Errorf("layout missing:\n%s", out)
	}
	// --silent prints nothing.
	out, _, code = runCmd(t, "inspect", "--silent", "--show-ops", p)
	if code != 0 || out != "" {
		t.Fatalf("silent: exit %d output %q", code, out)
	}
}

func TestInspectJSONOrders(t *testing.T) {
	p := writeTemp(t, sampleV2(t))
	r := inspectJSON(t, p)
	if r.Header["major_version"] != 2.0 || r.Header["header_size"] != 38.0 || r.Header["cluster_ops"] != 9.0 ||
		r.Header["num_merge_ops"] != 1.0 || r.Header["magic"] == nil {
		t.Fatalf("header %v", r.Header)
	}
	if _, ok := r.Header["op_count"]; ok {
		t.Fatal("v3 fields in a v2 header")
	}
	if r.Footer == nil || r.Footer.NumOps != 8 || r.Footer.OpsSize != 160 {
		t.Fatalf("footer %+v", r.Footer)
	}
	wantFile := []string{"sequence", "copy", "xor", "label", "replace", "zero", "label", "cluster"}
	if !slices.Equal(types(r.Ops), wantFile) {
		t.Fatalf("file order %v", types(r.Ops))
	}
	if r.Ops[4].Source == 0 || r.Ops[4].DataLength != 4096 || r.Ops[4].Compression != "none" {
		t.Fatalf("replace op %+v", r.Ops[4])
	}
	if r.Counts["label"] != 2 || r.Counts["copy"] != 1 || r.Counts["cluster"] != 1 || r.Counts["sequence"] != 1 {
		t.Fatalf("counts %v", r.Counts)
	}
	if r.LastLabel == nil || *r.LastLabel != 1 || r.MergeOrderOK != nil {
		t.Fatal("last_label / merge_order_ok")
	}

	// Merge order: sequence (20, 10) then others ascending (2, 7);
	// num_merge_ops = 1 skips the first entry unless --show-merged.
	cases := []struct {
		args []string
		want []uint64
	}{
		{[]string{"--order", "merge"}, []uint64{10, 2, 7}},
		{[]string{"--order=merge", "--show-merged"}, []uint64{20, 10, 2, 7}},
		{[]string{"--order", "reverse-merge"}, []uint64{7, 2, 10}},
		{[]string{"--order", "reverse-merge", "--show-merged"}, []uint64{7, 2, 10, 20}},
		{[]string{"--order", "merge", "--show-merged", "--legacy"}, []uint64{20, 10, 7, 2}},
	}
	for _, c := range cases {
		r := inspectJSON(t, append(c.args, p)...)
		if got := blocksOf(r.Ops); !slices.Equal(got, c.want) {
			t.Errorf("%v: %v, want %v", c.args, got, c.want)
		}
		for _, o := range r.Ops {
			if o.Type == "label" || o.Type == "cluster" || o.Type == "sequence" {
				t.Errorf("%v: metadata op in merge order", c.args)
			}
		}
	}
	// Flags after the path work too.
	r = inspectJSON(t, p, "--verify-merge-sequence")
	if r.MergeOrderOK == nil || !*r.MergeOrderOK {
		t.Fatal("merge_order_ok")
	}
}

func TestInspectV3(t *testing.T) {
	// Without sequence data a v3 merge order is plain file order, so a
	// Replace before a Copy is an inconsistent merge sequence.
	bad := writeTemp(t, buildV3(t, nil, []tOp{
		{cow.Op{Type: cow.OpReplace, NewBlock: 1}, fill('a')},
		{cow.Op{Type: cow.OpCopy, NewBlock: 2, Source: 1}, nil},
	}))
	r := inspectJSON(t, "--verify-merge-sequence", bad)
	if r.MergeOrderOK == nil || *r.MergeOrderOK {
		t.Fatal("inconsistent order not reported")
	}
	for _, k := range []string{"sequence_data_count", "resume_point_count", "resume_point_max", "op_count",
		"op_count_max", "compression_algorithm", "max_compression_size"} {
		if _, ok := r.Header[k]; !ok {
			t.Errorf("v3 header lacks %s", k)
		}
	}
	if r.Footer != nil {
		t.Fatal("v3 footer")
	}
	out, _, code := runCmd(t, "inspect", "--verify-merge-sequence", bad)
	if code != 0 || !strings.Contains(out, "Merge sequence is inconsistent!") || !strings.Contains(out, "Footer: none") {
		t.Fatalf("exit %d\n%s", code, out)
	}

	good := writeTemp(t, buildV3(t, []uint32{2}, []tOp{
		{cow.Op{Type: cow.OpReplace, NewBlock: 1}, fill('a')},
		{cow.Op{Type: cow.OpCopy, NewBlock: 2, Source: 1}, nil},
	}))
	r = inspectJSON(t, "--verify-merge-sequence", "--order", "merge", good)
	if !*r.MergeOrderOK || !slices.Equal(blocksOf(r.Ops), []uint64{2, 1}) {
		t.Fatalf("ok=%v order %v", *r.MergeOrderOK, blocksOf(r.Ops))
	}
}

func TestInspectDecompress(t *testing.T) {
	good := sampleV2(t)
	if _, errOut, code := runCmd(t, "inspect", "--decompress", "--silent", writeTemp(t, good)); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	// A gz image whose second payload is corrupt.
	comp, err := cow.NewCompressor(cow.CompressionGz, 9, 4096)
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := comp.Compress(nil, fill('a'))
	p2, _ := comp.Compress(nil, fill('b'))
	p2 = bytes.Clone(p2)
	p2[len(p2)/2] ^= 0x55
	p2[len(p2)-2] ^= 0x55
	img := buildV2(t, 0, []tOp{
		{cow.Op{Type: cow.OpReplace, NewBlock: 1, Compression: cow.CompressionGz}, p1},
		{cow.Op{Type: cow.OpReplace, NewBlock: 2, Compression: cow.CompressionGz}, p2},
	})
	path := writeTemp(t, img)
	_, errOut, code := runCmd(t, "inspect", "--decompress", path)
	if code != 1 || !strings.Contains(errOut, "op 1 ") || !strings.Contains(errOut, "0x") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	// JSON still reports, then fails.
	out, _, code := runCmd(t, "inspect", "--json", "--decompress", path)
	var r report
	if code != 1 || json.Unmarshal([]byte(out), &r) != nil || len(r.DecompressErrs) != 1 {
		t.Fatalf("json: exit %d errors %v", code, r.DecompressErrs)
	}
}

func TestInspectExtract(t *testing.T) {
	dir := t.TempDir()
	img := buildV2(t, 0, []tOp{
		{cow.Op{Type: cow.OpReplace, NewBlock: 3}, fill('c')},
		{cow.Op{Type: cow.OpZero, NewBlock: 1}, nil},
		{cow.Op{Type: cow.OpLabel, Source: 5}, nil},
		{cow.Op{Type: cow.OpReplace, NewBlock: 0}, fill('z')},
	})
	out := filepath.Join(dir, "out.img")
	if _, errOut, code := runCmd(t, "inspect", "--silent", "--extract-to", out, writeTemp(t, img)); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Concat(fill('z'), make([]byte, 4096), make([]byte, 4096), fill('c'))
	if !bytes.Equal(got, want) {
		t.Fatalf("extracted %d bytes, mismatch", len(got))
	}
	// Copy/Xor cannot be extracted.
	_, errOut, code := runCmd(t, "inspect", "--silent", "--extract-to", out, writeTemp(t, sampleV2(t)))
	if code != 1 || !strings.Contains(errOut, "cannot extract op 1 (copy") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

func TestUsage(t *testing.T) {
	p := writeTemp(t, sampleV2(t))
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{nil, 2, "usage: cowctl"},
		{[]string{"inspect"}, 2, "exactly one COW path"},
		{[]string{"inspect", "--order", "sideways", p}, 2, "--order"},
		{[]string{"inspect", "--bogus", p}, 2, "bogus"},
		{[]string{"inspect", p, p}, 2, "exactly one"},
		{[]string{"create"}, 2, "--source, --target and -o are required"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"inspect", filepath.Join(t.TempDir(), "missing")}, 1, "no such file"},
		{[]string{"inspect", "--help"}, 0, "Parses a COW image"},
		{[]string{"--help"}, 0, "inspect"},
	}
	for _, c := range cases {
		out, errOut, code := runCmd(t, c.args...)
		if code != c.code || !strings.Contains(out+errOut, c.msg) {
			t.Errorf("%v: exit %d (want %d), output %q lacks %q", c.args, code, c.code, out+errOut, c.msg)
		}
	}
	// A corrupt image is an error naming the file and offset.
	b := sampleV2(t)
	b[len(b)-cow.FooterSize+12]++ // footer num_ops
	bad := writeTemp(t, b)
	_, errOut, code := runCmd(t, "inspect", bad)
	if code != 1 || !strings.Contains(errOut, bad) || !strings.Contains(errOut, "num_ops") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}
