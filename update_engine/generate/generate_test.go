package generate

import (
	"archive/zip"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"io"
	"os/exec"
	"testing"

	"github.com/vabc-go/vabc/testdata/imagegen"
	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/ops"
	"github.com/vabc-go/vabc/update_engine/payload"
	"github.com/vabc-go/vabc/update_engine/sign"
)

type memImage struct{ b []byte }

func (m *memImage) WriteAt(p []byte, off int64) (int, error) {
	if int(off)+len(p) > len(m.b) {
		return 0, fmt.Errorf("write past end: %d+%d > %d", off, len(p), len(m.b))
	}
	return copy(m.b[off:], p), nil
}

// applyPayload parses the payload with update_engine/payload and applies it
// with update_engine/ops, returning the new images.
func applyPayload(t *testing.T, pl []byte, old map[string][]byte) map[string][]byte {
	t.Helper()
	p, err := payload.NewReader(bytes.NewReader(pl), int64(len(pl)))
	if err != nil {
		t.Fatalf("payload reader rejects generated payload: %v", err)
	}
	out := map[string][]byte{}
	bs := p.BlockSize()
	for _, pu := range p.Manifest.Partitions {
		name := pu.GetPartitionName()
		img := &memImage{b: make([]byte, pu.GetNewPartitionInfo().GetSize())}
		env := ops.Env{BlockSize: bs, Target: img, TargetZeroed: true}
		if o, ok := old[name]; ok && o != nil {
			env.Source = bytes.NewReader(o)
			if h := sha256.Sum256(o); !bytes.Equal(h[:], pu.GetOldPartitionInfo().GetHash()) || uint64(len(o)) != pu.GetOldPartitionInfo().GetSize() {
				t.Fatalf("%s: old_partition_info does not describe the source image", name)
			}
		}
		for i, op := range pu.Operations {
			blob, err := p.Blob(op)
			if err != nil {
				t.Fatalf("%s op %d: %v", name, i, err)
			}
			if err := ops.Execute(op, blob, env); err != nil {
				t.Fatalf("%s op %d (%s): %v", name, i, op.GetType(), err)
			}
		}
		if h := sha256.Sum256(img.b); !bytes.Equal(h[:], pu.GetNewPartitionInfo().GetHash()) {
			t.Fatalf("%s: applied image does not match new_partition_info hash", name)
		}
		out[name] = img.b
	}
	return out
}

// checkLayout checks blob contiguity and per-op invariants.
func checkLayout(t *testing.T, res *Result, delta bool) {
	t.Helper()
	m := res.Manifest
	next := uint64(0)
	for _, pu := range m.Partitions {
		covered := map[uint64]bool{}
		for i, op := range pu.Operations {
			if op.DataLength != nil {
				if op.GetDataOffset() != next {
					t.Fatalf("%s op %d: data_offset %d, previous blob ended at %d", pu.GetPartitionName(), i, op.GetDataOffset(), next)
				}
				next += op.GetDataLength()
				if len(op.DataSha256Hash) != 32 {
					t.Fatalf("%s op %d: no data_sha256_hash", pu.GetPartitionName(), i)
				}
			}
			if ops.NeedsSource(op.GetType()) && m.GetMinorVersion() >= 3 && len(op.SrcSha256Hash) != 32 {
				t.Fatalf("%s op %d: source op without src_sha256_hash", pu.GetPartitionName(), i)
			}
			if !delta && ops.NeedsSource(op.GetType()) {
				t.Fatalf("full payload has source op %s", op.GetType())
			}
			for _, e := range op.DstExtents {
				for b := e.GetStartBlock(); b < e.GetStartBlock()+e.GetNumBlocks(); b++ {
					if covered[b] {
						t.Fatalf("%s: block %d written twice", pu.GetPartitionName(), b)
					}
					covered[b] = true
				}
			}
		}
		if want := pu.GetNewPartitionInfo().GetSize() / uint64(m.GetBlockSize()); uint64(len(covered)) != want {
			t.Fatalf("%s: ops cover %d of %d blocks", pu.GetPartitionName(), len(covered), want)
		}
	}
	if m.SignaturesOffset != nil && m.GetSignaturesOffset() != next {
		t.Fatalf("signatures_offset %d, blobs end at %d", m.GetSignaturesOffset(), next)
	}
	if delta != (m.GetMinorVersion() != 0) {
		t.Fatalf("minor version %d for delta=%v", m.GetMinorVersion(), delta)
	}
}

// simulateMerge replays merge_operations on a copy of the old image the way
// snapuserd merges (spec §3.9): every read of a source block must still see
// the old content, and every written block must get the new content.
func simulateMerge(t *testing.T, pu *metadata.PartitionUpdate, old, new []byte, bs int) {
	t.Helper()
	base := make([]byte, max(len(old), len(new))+bs)
	copy(base, old)
	orig := append([]byte(nil), base...)
	written := map[uint64]bool{}
	for i, mo := range pu.MergeOperations {
		s, d := mo.GetSrcExtent(), mo.GetDstExtent()
		n := d.GetNumBlocks()
		off := uint64(mo.GetSrcOffset())
		if mo.GetType() == metadata.CowMergeOperation_COW_COPY && s.GetNumBlocks() != n {
			t.Fatalf("merge op %d: COW_COPY with %d src / %d dst blocks", i, s.GetNumBlocks(), n)
		}
		if mo.GetType() == metadata.CowMergeOperation_COW_XOR {
			want := n
			if off != 0 {
				want++
			}
			if s.GetNumBlocks() != want {
				t.Fatalf("merge op %d: COW_XOR src_offset %d with %d src / %d dst blocks", i, off, s.GetNumBlocks(), n)
			}
		}
		order := make([]uint64, n)
		desc := d.GetStartBlock() > s.GetStartBlock() && d.GetStartBlock() < s.GetStartBlock()+s.GetNumBlocks()
		for k := range order {
			if desc {
				order[k] = n - 1 - uint64(k)
			} else {
				order[k] = uint64(k)
			}
		}
		for _, k := range order {
			db := d.GetStartBlock() + k
			srcByte := (s.GetStartBlock()+k)*uint64(bs) + off
			if srcByte+uint64(bs) > uint64(len(new)) || srcByte+uint64(bs) > uint64(len(old)) {
				t.Fatalf("merge op %d reads past the end of the old or new partition", i)
			}
			if !bytes.Equal(base[srcByte:srcByte+uint64(bs)], orig[srcByte:srcByte+uint64(bs)]) {
				t.Fatalf("merge op %d (%s) reads block %d after it was overwritten", i, mo.GetType(), srcByte/uint64(bs))
			}
			if written[db] {
				t.Fatalf("merge op %d writes block %d twice", i, db)
			}
			written[db] = true
			want := new[db*uint64(bs) : (db+1)*uint64(bs)]
			if mo.GetType() == metadata.CowMergeOperation_COW_COPY && !bytes.Equal(base[srcByte:srcByte+uint64(bs)], want) {
				t.Fatalf("merge op %d: COW_COPY source block %d differs from destination block %d", i, srcByte/uint64(bs), db)
			}
			copy(base[db*uint64(bs):], want)
		}
	}
}

func generate(t *testing.T, cfg Config) *Result {
	t.Helper()
	res, err := Generate(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestRoundTripRaw(t *testing.T) {
	pairs, err := imagegen.RawPairs(11, 48)
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range pairs {
		for _, mode := range []string{"full", "delta", "delta-minor3", "delta-vabc"} {
			t.Run(pr.Name+"/"+mode, func(t *testing.T) {
				cfg := Config{MinorVersion: -1, ChunkSize: 32 << 10, Threads: 2}
				p := Partition{Name: "system", New: pr.New}
				if mode != "full" {
					p.Old = pr.Old
				}
				switch mode {
				case "delta-minor3":
					cfg.MinorVersion = 3
				case "delta-vabc":
					cfg.VABC = &VABC{CowVersion: 3, Compression: "lz4", CompressionFactor: 65536, XOR: true}
				}
				vendor := pr.Old[:16*4096]
				var vendorOld []byte
				if p.Old != nil {
					vendorOld = pr.New[:16*4096]
				}
				cfg.Partitions = []Partition{p, {Name: "vendor", New: vendor, Old: vendorOld}}
				res := generate(t, cfg)
				checkLayout(t, res, mode != "full")
				got := applyPayload(t, res.Payload, map[string][]byte{"system": p.Old, "vendor": vendorOld})
				if !bytes.Equal(got["system"], pr.New) || !bytes.Equal(got["vendor"], vendor) {
					t.Fatal("applied images differ from targets")
				}
				if mode == "delta-vabc" {
					pu := res.Manifest.Partitions[0]
					simulateMerge(t, pu, pr.Old, pr.New, 4096)
					kinds := map[metadata.CowMergeOperation_Type]int{}
					for _, mo := range pu.MergeOperations {
						kinds[mo.GetType()]++
					}
					t.Logf("merge operations: %v", kinds)
					if pr.Name == "mixed" && kinds[metadata.CowMergeOperation_COW_XOR] == 0 {
						t.Error("no COW_XOR merge operations for shifted data")
					}
					if pr.Name == "shuffled" && kinds[metadata.CowMergeOperation_COW_COPY] == 0 {
						t.Error("no COW_COPY merge operations for moved blocks")
					}
					checkCowBound(t, pu, pr.Old, pr.New, 4096)
				}
			})
		}
	}
}

// checkCowBound computes the size of a COW v2 that stores every written
// block raw (no compression: the worst case of every compressor): 20-byte ops
// for every block that is not unchanged in place (copy ops for blocks in
// COW_COPY merge operations, replace/XOR/zero ops with a full block of data
// otherwise), a label per install operation plus the end label, a cluster op
// per 200 ops, the 38-byte header, 2 MiB scratch buffer and 84-byte footer.
// estimate_cow_size and estimate_op_count_max must not be below it.
func checkCowBound(t *testing.T, pu *metadata.PartitionUpdate, old, new []byte, bs int) {
	t.Helper()
	copyDst := map[uint64]bool{}
	for _, mo := range pu.MergeOperations {
		if mo.GetType() == metadata.CowMergeOperation_COW_COPY {
			for b := mo.GetDstExtent().GetStartBlock(); b < mo.GetDstExtent().GetStartBlock()+mo.GetDstExtent().GetNumBlocks(); b++ {
				copyDst[b] = true
			}
		}
	}
	var ops, data uint64
	for b := 0; b < len(new)/bs; b++ {
		if (b+1)*bs <= len(old) && bytes.Equal(old[b*bs:(b+1)*bs], new[b*bs:(b+1)*bs]) {
			continue // identity: no COW op
		}
		ops++
		if !copyDst[uint64(b)] {
			data += uint64(bs)
		}
	}
	ops += uint64(len(pu.Operations)) + 1
	ops += ops / 200
	raw := 38 + 2<<20 + ops*20 + data + 84
	if pu.GetEstimateCowSize() < raw {
		t.Fatalf("estimate_cow_size %d is below a raw COW of %d bytes", pu.GetEstimateCowSize(), raw)
	}
	if pu.GetEstimateOpCountMax() < ops {
		t.Fatalf("estimate_op_count_max %d is below %d ops", pu.GetEstimateOpCountMax(), ops)
	}
}

func TestRoundTripExt4(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed")
	}
	for seed := uint64(1); seed <= 2; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			o := imagegen.Ext4Options{Files: 20, MaxFile: 96 << 10}
			if seed == 2 {
				o.ImageSize, o.NewImageSize = 8<<20, 10<<20 // partition grows
			}
			old, new, err := imagegen.Ext4Pair(t.Context(), t.TempDir(), seed, o)
			if err != nil {
				t.Fatal(err)
			}
			full := generate(t, Config{MinorVersion: -1, Partitions: []Partition{{Name: "system", New: new}}, Threads: 2})
			checkLayout(t, full, false)
			if got := applyPayload(t, full.Payload, nil); !bytes.Equal(got["system"], new) {
				t.Fatal("full payload does not reproduce the image")
			}
			cfg := Config{MinorVersion: -1, Partitions: []Partition{{Name: "system", Old: old, New: new}}, Threads: 2,
				VABC: &VABC{CowVersion: 2, Compression: "lz4", XOR: true}}
			inc := generate(t, cfg)
			checkLayout(t, inc, true)
			if got := applyPayload(t, inc.Payload, map[string][]byte{"system": old}); !bytes.Equal(got["system"], new) {
				t.Fatal("incremental payload does not reproduce the image")
			}
			simulateMerge(t, inc.Manifest.Partitions[0], old, new, 4096)
			checkCowBound(t, inc.Manifest.Partitions[0], old, new, 4096)
			if len(inc.Payload)*4 > len(full.Payload) {
				t.Errorf("incremental %d bytes is not well under the full payload's %d bytes", len(inc.Payload), len(full.Payload))
			}
			t.Logf("full %d bytes, incremental %d bytes, stats %+v", len(full.Payload), len(inc.Payload), inc.Stats)
		})
	}
}

func TestDeterministic(t *testing.T) {
	old, new, err := imagegen.Raw(imagegen.Mixed, 5, 64)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := sign.NewSigner(key)
	var first []byte
	for _, threads := range []int{1, 3} {
		res := generate(t, Config{MinorVersion: -1, Threads: threads, ChunkSize: 32 << 10, Signers: []sign.Signer{signer},
			Partitions: []Partition{{Name: "a", Old: old, New: new}, {Name: "b", Old: new, New: old}},
			VABC:       &VABC{XOR: true}})
		if first == nil {
			first = res.Payload
		} else if !bytes.Equal(first, res.Payload) {
			t.Fatalf("payload with %d threads differs", threads)
		}
	}
}

// verifySigs checks both signatures with update_engine/sign (spec §4.1).
func verifySigs(pl []byte, pub crypto.PublicKey) error {
	p, err := payload.NewReader(bytes.NewReader(pl), int64(len(pl)))
	if err != nil {
		return err
	}
	_, err = sign.Verify(p, sign.Keys{pub})
	return err
}

func TestSigned(t *testing.T) {
	old, new, err := imagegen.Raw(imagegen.Mixed, 8, 24)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for name, key := range map[string]any{"rsa2048": rsaKey, "p256": ecKey} {
		t.Run(name, func(t *testing.T) {
			s, err := sign.NewSigner(key)
			if err != nil {
				t.Fatal(err)
			}
			res := generate(t, Config{MinorVersion: -1, Signers: []sign.Signer{s}, ChunkSize: 16 << 10,
				Partitions: []Partition{{Name: "boot", Old: old, New: new}}})
			pl := res.Payload
			if err := verifySigs(pl, s.Public()); err != nil {
				t.Fatalf("generated signature rejected: %v", err)
			}
			if got := applyPayload(t, pl, map[string][]byte{"boot": old}); !bytes.Equal(got["boot"], new) {
				t.Fatal("signed payload does not apply")
			}
			// Flip one bit at many places in the signed ranges: header,
			// manifest, blobs. Each must be rejected (by parsing or by the
			// signature).
			ms := int(res.MetadataSize)
			bo := ms + int(res.MetadataSignatureSize)
			end := len(pl) - int(res.Manifest.GetSignaturesSize())
			// Every byte of the metadata and at least 1500 places spread
			// over the blobs (all of them when the blobs are that small),
			// plus the first and last signed blob byte.
			var positions []int
			for i := 0; i < ms; i++ {
				positions = append(positions, i)
			}
			for i := bo; i < end; i += max(1, (end-bo)/1500) {
				positions = append(positions, i)
			}
			positions = append(positions, end-1)
			for _, pos := range positions {
				bad := append([]byte(nil), pl...)
				bad[pos] ^= 0x10
				if verifySigs(bad, s.Public()) == nil {
					t.Fatalf("bit flip at offset %d (metadata_size %d, blob offset %d) accepted", pos, ms, bo)
				}
			}
			// Flipping a bit in the signature itself must fail too.
			bad := append([]byte(nil), pl...)
			bad[len(bad)-10] ^= 1
			if verifySigs(bad, s.Public()) == nil {
				t.Fatal("corrupted payload signature accepted")
			}
		})
	}
}

func TestPropertiesAndZip(t *testing.T) {
	_, new, _ := imagegen.Raw(imagegen.Compressible, 3, 32)
	res := generate(t, Config{MinorVersion: -1, Partitions: []Partition{{Name: "system", New: new}}})
	props, err := payload.ParseProperties(res.Properties())
	if err != nil {
		t.Fatal(err)
	}
	p, err := payload.NewReader(bytes.NewReader(res.Payload), int64(len(res.Payload)))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckProperties(props); err != nil {
		t.Fatal(err)
	}
	var zb bytes.Buffer
	if err := res.WriteOTAZip(&zb); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(zb.Bytes()), int64(zb.Len()))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]*zip.File{}
	for _, f := range zr.File {
		names[f.Name] = f
	}
	for _, n := range []string{ZipPayload, ZipProperties, ZipMetadata, ZipMetadataPB} {
		if names[n] == nil {
			t.Fatalf("OTA zip lacks %s", n)
		}
	}
	f := names[ZipPayload]
	if f.Method != zip.Store {
		t.Fatal("payload.bin is not stored")
	}
	off, err := f.DataOffset()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(zb.Bytes()[off:off+int64(len(res.Payload))], res.Payload) {
		t.Fatal("payload.bin is not in place in the zip")
	}
	rc, _ := names[ZipMetadata].Open()
	meta, _ := io.ReadAll(rc)
	want := fmt.Sprintf("payload.bin:%d:%d", off, len(res.Payload))
	if !bytes.Contains(meta, []byte(want)) || !bytes.Contains(meta, []byte("ota-type=AB")) {
		t.Fatalf("metadata %q lacks %q", meta, want)
	}
	if zp, err := payload.NewZipReader(bytes.NewReader(zb.Bytes()), int64(zb.Len())); err != nil {
		t.Fatalf("payload.NewZipReader: %v", err)
	} else if zp.Size() != int64(len(res.Payload)) {
		t.Fatal("zip payload size mismatch")
	}
}

func TestConfigErrors(t *testing.T) {
	img := make([]byte, 8192)
	cases := map[string]Config{
		"no partitions":   {MinorVersion: -1},
		"unaligned":       {MinorVersion: -1, Partitions: []Partition{{Name: "a", New: make([]byte, 100)}}},
		"full minor 5":    {MinorVersion: 5, Partitions: []Partition{{Name: "a", New: img}}},
		"delta minor 1":   {MinorVersion: 1, Partitions: []Partition{{Name: "a", Old: img, New: img}}},
		"delta zstd m8":   {MinorVersion: 8, Compressions: []Compression{ZSTD}, Partitions: []Partition{{Name: "a", Old: img, New: img}}},
		"mixed sources":   {MinorVersion: -1, Partitions: []Partition{{Name: "a", Old: img, New: img}, {Name: "b", New: img}}},
		"duplicate":       {MinorVersion: -1, Partitions: []Partition{{Name: "a", New: img}, {Name: "a", New: img}}},
		"cow version 4":   {MinorVersion: -1, VABC: &VABC{CowVersion: 4}, Partitions: []Partition{{Name: "a", New: img}}},
		"factor on cow 2": {MinorVersion: -1, VABC: &VABC{CowVersion: 2, CompressionFactor: 65536}, Partitions: []Partition{{Name: "a", New: img}}},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Generate(t.Context(), cfg); err == nil {
				t.Fatal("expected an error")
			}
		})
	}
}

func TestOrderMergeCycle(t *testing.T) {
	// a: 0→10 (reads 0, writes 10), b: 10→0: a cycle; c: 20→30 independent;
	// d reads 30 (which c writes) so d must come before c.
	nodes := []mergeNode{
		{typ: metadata.CowMergeOperation_COW_COPY, dst: 10, n: 1, src: 0, srcN: 1},
		{typ: metadata.CowMergeOperation_COW_COPY, dst: 0, n: 1, src: 10, srcN: 1},
		{typ: metadata.CowMergeOperation_COW_COPY, dst: 30, n: 1, src: 20, srcN: 1},
		{typ: metadata.CowMergeOperation_COW_COPY, dst: 40, n: 1, src: 30, srcN: 1},
	}
	ordered, dropped := orderMerge(nodes)
	if len(dropped) != 1 || len(ordered) != 3 {
		t.Fatalf("ordered %d dropped %d, want 3 and 1", len(ordered), len(dropped))
	}
	pos := map[uint64]int{}
	for i, n := range ordered {
		pos[n.dst] = i
	}
	if pos[40] > pos[30] {
		t.Fatal("reader of block 30 ordered after its writer")
	}
}

// TestTwoSigners: one Signatures entry per key; either key verifies.
func TestTwoSigners(t *testing.T) {
	_, new, _ := imagegen.Raw(imagegen.Compressible, 4, 8)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	s1, _ := sign.NewSigner(rsaKey)
	s2, _ := sign.NewSigner(ecKey)
	res := generate(t, Config{Signers: []sign.Signer{s1, s2}, Partitions: []Partition{{Name: "a", New: new}}})
	for _, pub := range []crypto.PublicKey{&rsaKey.PublicKey, &ecKey.PublicKey} {
		if err := verifySigs(res.Payload, pub); err != nil {
			t.Fatalf("%T: %v", pub, err)
		}
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if verifySigs(res.Payload, &other.PublicKey) == nil {
		t.Fatal("unrelated key accepted")
	}
}
