// Package cowfixture builds the binary COW fixtures in cow/testdata. The
// generator (cow/testdata/mkcow) writes them; cow's fixture test rebuilds
// each one in memory and compares byte for byte, so the writers stay
// deterministic and the checked-in files stay reproducible (after pebble's
// sstable/testdata/make-table.go).
package cowfixture

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/vabc-go/vabc/cow"
)

// Fixture is one checked-in COW image.
type Fixture struct {
	Name  string // file name under cow/testdata
	About string
	// Labels lists labels present in the image (fuzz seeds parse at them).
	Labels []uint64
	build  func(f cow.File) error
}

// Build writes the fixture into f (which must be empty).
func (fx Fixture) Build(f cow.File) error { return fx.build(f) }

// Bytes builds the fixture in memory.
func (fx Fixture) Bytes() ([]byte, error) {
	var b Buffer
	if err := fx.build(&b); err != nil {
		return nil, fmt.Errorf("fixture %s: %w", fx.Name, err)
	}
	return b.Bytes(), nil
}

// All returns every fixture.
func All() []Fixture {
	return []Fixture{
		{
			Name: "v2_legacy.cow",
			About: "AOSP write_cow -write_legacy rebuilt with the v2 writer (spec §2.10): cluster_ops 5, num_merge_ops 1, " +
				"2 MiB scratch, no compression; byte-identical to AOSP tools/testdata/cow_v2 (SHA-256 " + AOSPCowV2SHA256 + ")",
			Labels: []uint64{1, 2},
			build:  buildV2Legacy,
		},
		{
			Name:   "v2_gz_seq.cow",
			About:  "v2, gz, cluster_ops 4, no scratch: sequence ops, copies, xor, replace, zero, labels",
			Labels: []uint64{0, 1, cow.EndOfInstallLabel},
			build:  buildV2GzSeq,
		},
		{
			Name:   "v3_lz4_64k.cow",
			About:  "v3, lz4, compression factor 64 KiB, no scratch, op_count_max 64: sequence region, copies, multi-block replace, xor, zero, labels",
			Labels: []uint64{0, 1, cow.EndOfInstallLabel},
			build:  buildV3Lz4,
		},
	}
}

// Data returns n deterministic, moderately compressible bytes.
func Data(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x636f77))
	b := make([]byte, 0, n+64)
	for len(b) < n {
		switch r.IntN(4) {
		case 0:
			b = append(b, "Virtual A/B compressed snapshot "...)
		case 1:
			b = binary.LittleEndian.AppendUint64(b, uint64(len(b))*0x9E3779B9)
		case 2:
			b = append(b, make([]byte, r.IntN(64))...)
		default:
			for range 24 {
				b = append(b, byte(r.Uint32()))
			}
		}
	}
	return b[:n]
}

func run(steps ...func() error) error {
	for i, s := range steps {
		if err := s(); err != nil {
			return fmt.Errorf("step %d: %w", i, err)
		}
	}
	return nil
}

// AOSPCowV2SHA256 is the SHA-256 of AOSP's tools/testdata/cow_v2, which
// v2_legacy.cow reproduces.
const AOSPCowV2SHA256 = "afd7288855d0d9afd55e87910cc1886d7e73b97876cc4d15b85303d8027c8e2f"

// WriteCowData is the block AOSP write_cow writes as both its raw and its
// XOR block: "This is some data, believe it" padded with zeros.
func WriteCowData() []byte {
	d := make([]byte, cow.DefaultBlockSize)
	copy(d, "This is some data, believe it")
	return d
}

func buildV2Legacy(f cow.File) error {
	w, err := cow.NewWriterV2(f, cow.WriterOptions{ClusterOps: 5, NumMergeOps: 1})
	if err != nil {
		return err
	}
	return run(
		func() error { return w.AddCopy(0, 5, 1) },
		func() error { return w.AddRawBlocks(2, WriteCowData()) },
		func() error { return w.AddLabel(1) },
		func() error { return w.AddXorBlocks(50, WriteCowData(), 24, 10) },
		func() error { return w.AddZeroBlocks(5, 10) },
		func() error { return w.AddLabel(2) },
		w.Finalize,
		w.Close,
	)
}

func buildV2GzSeq(f cow.File) error {
	w, err := cow.NewWriterV2(f, cow.WriterOptions{ClusterOps: 4, NoScratch: true, Compression: cow.CompressionGz})
	if err != nil {
		return err
	}
	return run(
		func() error { return w.AddSequenceData([]uint32{4, 3, 9, 1}) },
		func() error { return w.AddCopy(3, 2, 2) },
		func() error { return w.AddXorBlocks(9, Data(3, 4096), 8, 300) },
		func() error { return w.AddCopy(1, 0, 1) },
		func() error { return w.AddLabel(0) },
		func() error { return w.AddRawBlocks(20, Data(4, 3*4096)) },
		func() error { return w.AddLabel(1) },
		func() error { return w.AddZeroBlocks(30, 5) },
		func() error { return w.AddLabel(cow.EndOfInstallLabel) },
		w.Finalize,
		w.Close,
	)
}

func buildV3Lz4(f cow.File) error {
	w, err := cow.NewWriterV3(f, cow.WriterOptions{
		NoScratch: true, Compression: cow.CompressionLz4, CompressionFactor: 64 << 10, OpCountMax: 64,
	})
	if err != nil {
		return err
	}
	return run(
		func() error { return w.AddSequenceData([]uint32{4, 3, 9}) },
		func() error { return w.AddCopy(3, 2, 2) },
		func() error { return w.AddXorBlocks(9, Data(5, 4096), 8, 300) },
		func() error { return w.AddLabel(0) },
		func() error { return w.AddRawBlocks(32, bytes.Repeat(Data(6, 4096), 23)) }, // units of 16+4+2+1 blocks
		func() error { return w.AddLabel(1) },
		func() error { return w.AddZeroBlocks(60, 3) },
		func() error { return w.AddLabel(cow.EndOfInstallLabel) },
		w.Finalize,
		w.Close,
	)
}

// Buffer is an in-memory cow.File.
type Buffer struct{ b []byte }

func (m *Buffer) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *Buffer) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

func (m *Buffer) Sync() error { return nil }

func (m *Buffer) Truncate(n int64) error {
	if n <= int64(len(m.b)) {
		m.b = m.b[:n]
	} else {
		m.b = append(m.b, make([]byte, n-int64(len(m.b)))...)
	}
	return nil
}

// Size reports the current length (used by the writers' reopen path).
func (m *Buffer) Size() int64 { return int64(len(m.b)) }

// Bytes returns the contents (not a copy).
func (m *Buffer) Bytes() []byte { return m.b }
