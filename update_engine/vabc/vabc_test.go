package vabc

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/testdata/imagegen"
	"github.com/vabc-go/vabc/update_engine/apply"
	"github.com/vabc-go/vabc/update_engine/generate"
	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/payload"
	"github.com/vabc-go/vabc/update_engine/payload/payloadtest"
	"google.golang.org/protobuf/proto"
)

// mergeCOW merges the COW at path into a copy of old the way snapuserd does:
// in merge order, in place (so Copy and Xor ops read the partially merged
// image; a wrong merge order shows up as wrong data). It first checks
// VerifyMergeOps.
func mergeCOW(t *testing.T, old []byte, newSize int64, path string) []byte {
	t.Helper()
	r, err := cow.Open(path, nil)
	if err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
	defer r.Close()
	if err := r.VerifyMergeOps(); err != nil {
		t.Fatalf("%s: VerifyMergeOps: %v", path, err)
	}
	if _, ok := finished(path); !ok {
		t.Errorf("%s: does not end with the end-of-install label", path)
	}
	bs := int64(r.Header().BlockSize)
	img := make([]byte, max(int64(len(old)), newSize))
	copy(img, old)
	for _, op := range r.MergeOrder() {
		nb := int64(op.NewBlock) * bs
		switch op.Type {
		case cow.OpCopy:
			s := int64(op.Source) * bs
			copy(img[nb:nb+bs], img[s:s+bs])
		case cow.OpZero:
			clear(img[nb : nb+bs])
		case cow.OpReplace:
			n := int64(op.Blocks()) * bs
			if _, err := r.ReadData(&op, img[nb:nb+n], 0); err != nil {
				t.Fatalf("%s: %v: %v", path, op, err)
			}
		case cow.OpXor:
			buf := make([]byte, bs)
			if _, err := r.ReadData(&op, buf, 0); err != nil {
				t.Fatalf("%s: %v: %v", path, op, err)
			}
			// The source range may overlap the destination block (an
			// unaligned source straddles it): read it before writing.
			s := int64(op.Source)
			src := append([]byte(nil), img[s:s+bs]...)
			for j := range buf {
				img[nb+int64(j)] = buf[j] ^ src[j]
			}
		default:
			t.Fatalf("%s: unexpected op in merge order: %v", path, op)
		}
	}
	return img[:newSize]
}

type testPayload struct {
	p    *payload.Payload
	raw  []byte
	old  map[string][]byte
	new  map[string][]byte
	dir  string // holds payload.bin and old/<name>.img
	path string
	// extracted is the directory `payload extract` wrote, once done.
	extracted string
}

func makePayload(t testing.TB, pairs []imagegen.Pair, full bool, v *generate.VABC, chunk int, mods ...func(*generate.Config)) *testPayload {
	t.Helper()
	tp := &testPayload{old: map[string][]byte{}, new: map[string][]byte{}, dir: t.TempDir()}
	var parts []generate.Partition
	oldDir := filepath.Join(tp.dir, "old")
	os.MkdirAll(oldDir, 0o755)
	for _, pr := range pairs {
		gp := generate.Partition{Name: pr.Name, New: pr.New}
		if !full {
			gp.Old = pr.Old
		}
		parts = append(parts, gp)
	}
	cfg := generate.Config{Partitions: parts, MinorVersion: -1, ChunkSize: chunk, Threads: 2, VABC: v}
	for _, m := range mods {
		m(&cfg)
	}
	res, err := generate.Generate(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The images the payload updates between (with verity, the inputs with
	// hash tree and FEC appended).
	for _, im := range res.Images {
		if im.Old != nil {
			tp.old[im.Name] = im.Old
			if err := os.WriteFile(filepath.Join(oldDir, im.Name+".img"), im.Old, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		tp.new[im.Name] = im.New
	}
	tp.raw = res.Payload
	tp.path = filepath.Join(tp.dir, "payload.bin")
	if err := os.WriteFile(tp.path, res.Payload, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := payload.Open(tp.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	tp.p = p
	return tp
}

func (tp *testPayload) oldDir() string { return filepath.Join(tp.dir, "old") }

// checkCOWs merges every COW in out and compares with the extracted image and
// the generator's input.
func (tp *testPayload) checkCOWs(t *testing.T, out string) {
	t.Helper()
	if tp.extracted == "" {
		ext := filepath.Join(tp.dir, "extracted")
		if _, err := apply.Extract(context.Background(), tp.p, apply.Options{OutDir: ext, OldDir: tp.oldDir(), Threads: 2}); err != nil {
			t.Fatalf("extract: %v", err)
		}
		tp.extracted = ext
	}
	ext := tp.extracted
	for name, want := range tp.new {
		img, err := os.ReadFile(filepath.Join(ext, name+".img"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(img, want) {
			t.Fatalf("%s: extract differs from the generator input", name)
		}
		got := mergeCOW(t, tp.old[name], int64(len(want)), filepath.Join(out, name+".cow"))
		if !bytes.Equal(got, img) {
			t.Fatalf("%s: old + COW differs from the extracted image (first difference at block %d)", name, firstDiff(got, img)/4096)
		}
		if s, ok := loadState(filepath.Join(out, name+".cow.state")); !ok || !s.Complete || s.Label != cow.EndOfInstallLabel {
			t.Errorf("%s: state after completion: %+v %v", name, s, ok)
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestRoundTrip(t *testing.T) {
	pairs, err := imagegen.RawPairs(7, 48)
	if err != nil {
		t.Fatal(err)
	}
	// Payloads are generated once per manifest configuration; most cases
	// override the manifest's settings with Options.
	payloads := map[string]*testPayload{
		"full":    makePayload(t, pairs, true, &generate.VABC{CowVersion: 2, Compression: "lz4"}, 32<<10),
		"incr":    makePayload(t, pairs, false, &generate.VABC{CowVersion: 2, Compression: "lz4", XOR: true}, 32<<10),
		"incr-v3": makePayload(t, pairs[2:6], false, &generate.VABC{CowVersion: 3, Compression: "zstd", CompressionFactor: 64 << 10, XOR: true}, 64<<10),
	}
	for _, tc := range []struct {
		name, payload string
		opts          Options
		wantV         uint32
		wantXor       bool
	}{
		{"full-v2-lz4", "full", Options{}, 2, false},
		{"full-v3-zstd-64k", "full", Options{CowVersion: 3, Compression: "zstd", CompressionFactor: 64 << 10}, 3, false},
		{"incr-v2-lz4-xor", "incr", Options{}, 2, true},
		{"incr-v3-gz-xor-16k", "incr", Options{CowVersion: 3, Compression: "gz", CompressionFactor: 16 << 10}, 3, true},
		{"incr-v2-none", "incr", Options{Compression: "none"}, 2, false},
		{"incr-v3-noxor", "incr", Options{CowVersion: 3, DisableXOR: true}, 3, false},
		{"incr-v3-brotli", "incr", Options{CowVersion: 3, Compression: "brotli,5", CompressionFactor: 32 << 10, Threads: 1}, 3, true},
		{"manifest-v3-zstd-64k", "incr-v3", Options{}, 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := payloads[tc.payload]
			full := tc.payload == "full"
			out := t.TempDir()
			opts := tc.opts
			opts.OutDir = out
			opts.WrapFile = noSync
			if !full {
				opts.OldDir = tp.oldDir()
			}
			res, err := Write(t.Context(), tp.p, opts)
			if err != nil {
				t.Fatal(err)
			}
			var xor, cp int
			for _, r := range res {
				xor += r.XorBlocks
				cp += r.CopyBlocks
				if !r.Verified {
					t.Errorf("%s: not verified", r.Name)
				}
				if r.DroppedHints != 0 {
					t.Errorf("%s: %d merge hint blocks dropped", r.Name, r.DroppedHints)
				}
				if r.CowVersion != tc.wantV {
					t.Errorf("%s: COW v%d, want v%d", r.Name, r.CowVersion, tc.wantV)
				}
				cr, err := cow.Open(r.Path, nil)
				if err != nil {
					t.Fatal(err)
				}
				h := cr.Header()
				if uint32(h.MajorVersion) != tc.wantV {
					t.Errorf("%s: header major %d", r.Name, h.MajorVersion)
				}
				if h.MajorVersion == 3 && r.CompressionFactor != 0 && h.MaxCompressionSize != r.CompressionFactor {
					t.Errorf("%s: max_compression_size %d, want %d", r.Name, h.MaxCompressionSize, r.CompressionFactor)
				}
				if est := tp.p.Partition(r.Name).GetEstimateCowSize(); est != 0 && uint64(r.Size) > est && tc.payload == "incr-v3" {
					t.Errorf("%s: COW %d bytes > estimate_cow_size %d", r.Name, r.Size, est)
				}
				cr.Close()
			}
			if !full && cp == 0 {
				t.Error("no Copy ops in an incremental")
			}
			if tc.wantXor != (xor > 0) {
				t.Errorf("%d XOR blocks, want some: %v", xor, tc.wantXor)
			}
			tp.checkCOWs(t, out)
		})
	}
}

// TestExt4 round-trips an ext4 image pair with file edits.
func TestExt4(t *testing.T) {
	if testing.Short() {
		t.Skip("mkfs.ext4")
	}
	old, nw, err := imagegen.Ext4Pair(t.Context(), t.TempDir(), 3, imagegen.Ext4Options{Files: 20, MaxFile: 64 << 10})
	if err != nil {
		t.Skipf("ext4 pair: %v", err)
	}
	tp := makePayload(t, []imagegen.Pair{{Name: "system", Old: old, New: nw}}, false, &generate.VABC{CowVersion: 3, Compression: "lz4", CompressionFactor: 64 << 10, XOR: true}, 0)
	out := t.TempDir()
	if _, err := Write(t.Context(), tp.p, Options{OutDir: out, OldDir: tp.oldDir(), Threads: 2, WrapFile: noSync}); err != nil {
		t.Fatal(err)
	}
	tp.checkCOWs(t, out)
}

func TestLayout(t *testing.T) {
	pairs, err := imagegen.RawPairs(9, 32)
	if err != nil {
		t.Fatal(err)
	}
	tp := makePayload(t, pairs[3:4], false, &generate.VABC{CowVersion: 2, Compression: "lz4", XOR: true}, 16<<10)
	out := t.TempDir()
	if _, err := Write(t.Context(), tp.p, Options{OutDir: out, OldDir: tp.oldDir(), WrapFile: noSync}); err != nil {
		t.Fatal(err)
	}
	pu := tp.p.Manifest.Partitions[0]
	r, err := cow.Open(filepath.Join(out, pu.GetPartitionName()+".cow"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Sequence ops, then Copy ops, then Label(0), then data ops, labels 1…N
	// in order, then the end label.
	phase := 0
	next := uint64(0)
	for i, op := range r.Ops() {
		switch op.Type {
		case cow.OpSequence:
			if phase > 0 {
				t.Fatalf("op %d: sequence op after other ops", i)
			}
		case cow.OpCopy:
			if phase > 1 {
				t.Fatalf("op %d: Copy op after Label(0)", i)
			}
			phase = 1
		case cow.OpLabel:
			want := next
			if next == uint64(len(pu.Operations))+1 {
				want = cow.EndOfInstallLabel
			}
			if op.Source != want {
				t.Fatalf("op %d: label %d, want %d", i, op.Source, want)
			}
			next++
			phase = 2
		case cow.OpCluster:
		default:
			if phase != 2 {
				t.Fatalf("op %d: %v before Label(0)", i, op.Type)
			}
		}
	}
	if next != uint64(len(pu.Operations))+2 {
		t.Fatalf("%d labels, want %d", next, len(pu.Operations)+2)
	}
}

func TestErrors(t *testing.T) {
	pairs, err := imagegen.RawPairs(5, 16)
	if err != nil {
		t.Fatal(err)
	}
	tp := makePayload(t, pairs[:1], false, &generate.VABC{CowVersion: 2, Compression: "lz4", XOR: true}, 0)
	for _, tc := range []struct {
		name string
		opts Options
		edit func(*metadata.DeltaArchiveManifest) func()
		want string
	}{
		{"no-old", Options{}, nil, "--old DIR"},
		{"bad-version", Options{CowVersion: 4}, nil, "only 2 and 3"},
		{"bad-compression", Options{Compression: "lzma"}, nil, "compression"},
		{"bad-factor", Options{CowVersion: 3, CompressionFactor: 3000}, nil, "power of two"},
		{"unknown-partition", Options{Partitions: []string{"vendor"}}, nil, "no partition"},
		{"zucchini", Options{}, func(m *metadata.DeltaArchiveManifest) func() {
			op := m.Partitions[0].Operations[0]
			old := op.GetType()
			op.Type = metadata.InstallOperation_ZUCCHINI.Enum()
			return func() { op.Type = old.Enum() }
		}, "unsupported op ZUCCHINI in partition random op 0"},
		{"twice-written", Options{}, func(m *metadata.DeltaArchiveManifest) func() {
			pu := m.Partitions[0]
			pu.Operations = append(pu.Operations, pu.Operations[0])
			return func() { pu.Operations = pu.Operations[:len(pu.Operations)-1] }
		}, "a COW cannot express that"},
		{"new-hash", Options{}, func(m *metadata.DeltaArchiveManifest) func() {
			ni := m.Partitions[0].NewPartitionInfo
			old := ni.Hash
			ni.Hash = make([]byte, 32)
			return func() { ni.Hash = old }
		}, "new_partition_info.hash"},
		{"hash-tree-no-data", Options{}, func(m *metadata.DeltaArchiveManifest) func() {
			one := uint64(1)
			m.Partitions[0].HashTreeExtent = &metadata.Extent{StartBlock: &one, NumBlocks: &one}
			return func() { m.Partitions[0].HashTreeExtent = nil }
		}, "hash tree extent without a data extent"},
		{"fec-outside", Options{}, func(m *metadata.DeltaArchiveManifest) func() {
			pu := m.Partitions[0]
			pu.FecDataExtent = payloadtest.Ext(0, 2)[0]
			pu.FecExtent = payloadtest.Ext(1<<40, 2)[0]
			pu.FecRoots = proto.Uint32(2)
			return func() { pu.FecDataExtent, pu.FecExtent, pu.FecRoots = nil, nil, nil }
		}, "fec_extent (1099511627776,2) beyond the partition"},
		{"hash-tree-algorithm", Options{}, func(m *metadata.DeltaArchiveManifest) func() {
			pu := m.Partitions[0]
			pu.HashTreeDataExtent = payloadtest.Ext(0, 2)[0]
			pu.HashTreeExtent = payloadtest.Ext(2, 1)[0]
			pu.HashTreeAlgorithm = proto.String("md5")
			return func() { pu.HashTreeDataExtent, pu.HashTreeExtent, pu.HashTreeAlgorithm = nil, nil, nil }
		}, `hash_tree_algorithm "md5"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.OutDir = t.TempDir()
			if tc.name != "no-old" {
				opts.OldDir = tp.oldDir()
			}
			if tc.edit != nil {
				defer tc.edit(tp.p.Manifest)()
			}
			_, err := Write(t.Context(), tp.p, opts)
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			ents, _ := os.ReadDir(opts.OutDir)
			for _, e := range ents {
				t.Errorf("left behind: %s", e.Name())
			}
		})
	}
	t.Run("source-hash-mismatch", func(t *testing.T) {
		bad := t.TempDir()
		b := append([]byte(nil), tp.old["random"]...)
		for i := range b {
			b[i] ^= 0x55
		}
		os.WriteFile(filepath.Join(bad, "random.img"), b, 0o644)
		out := t.TempDir()
		_, err := Write(t.Context(), tp.p, Options{OutDir: out, OldDir: bad})
		var oe *payload.OpError
		if !errors.As(err, &oe) || !bytes.Contains([]byte(err.Error()), []byte("hash")) {
			t.Fatalf("err = %v, want an op hash error", err)
		}
		// The unfinished COW must not look complete: no footer.
		if _, err := cow.Open(filepath.Join(out, "random.cow"), nil); err == nil {
			t.Fatal("half-written COW parses as complete")
		}
	})
}
