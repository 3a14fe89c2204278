package payload_test

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/payload"
)

// FuzzNewReader parses arbitrary bytes as payload.bin. Rejections must be
// marked errors; accepted payloads must re-encode to a manifest that parses
// again with the same partitions, and every op blob must be readable.
func FuzzNewReader(f *testing.F) {
	f.Add(sample().Build())
	f.Add([]byte("CrAU\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x18\x00"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := payload.NewReader(bytes.NewReader(raw), int64(len(raw)))
		if err != nil {
			if !errors.Is(err, payload.ErrCorrupt) && !errors.Is(err, payload.ErrUnsupported) {
				t.Fatalf("unmarked error %v", err)
			}
			return
		}
		for _, pu := range p.Manifest.Partitions {
			for _, op := range pu.Operations {
				if _, err := p.Blob(op); err != nil {
					t.Fatalf("validated blob unreadable: %v", err)
				}
			}
		}
		b, err := proto.Marshal(p.Manifest)
		if err != nil {
			t.Fatal(err)
		}
		var again = p.Manifest.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(b, again); err != nil {
			t.Fatalf("re-encoded manifest does not parse: %v", err)
		}
	})
}

// FuzzValidate opens arbitrary bytes as payload.bin and runs the manifest
// and partition validators with small limits. Rejections must be marked
// errors; what ValidatePartition accepts must really lie inside the
// partition: known op types, every destination and verity extent within
// PartitionSize, that size within the limit, hashes present.
func FuzzValidate(f *testing.F) {
	f.Add(sample().Build())
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := payload.NewReader(bytes.NewReader(raw), int64(len(raw)))
		if err != nil {
			return
		}
		if err := p.ValidateManifest(); err != nil && !errors.Is(err, payload.ErrUnsupported) {
			t.Fatalf("unmarked manifest error %v", err)
		}
		bs := p.BlockSize()
		const limit = 1 << 30
		for _, pu := range p.Manifest.Partitions {
			err := p.ValidatePartition(pu, payload.Limits{MaxPartitionSize: limit})
			if err != nil {
				if !errors.Is(err, payload.ErrCorrupt) && !errors.Is(err, payload.ErrUnsupported) {
					t.Fatalf("unmarked partition error %v", err)
				}
				continue
			}
			size := payload.PartitionSize(pu, bs)
			if size < 0 || size > limit {
				t.Fatalf("accepted partition size %d", size)
			}
			blocks := (uint64(size) + uint64(bs) - 1) / uint64(bs)
			if len(pu.GetNewPartitionInfo().GetHash()) == 0 {
				t.Fatal("accepted a partition without new_partition_info.hash")
			}
			for i, op := range pu.Operations {
				if !payload.KnownType(op.GetType()) {
					t.Fatalf("op %d: accepted unknown type %d", i, op.GetType())
				}
				if op.GetDataLength() > 0 && op.DataSha256Hash == nil {
					t.Fatalf("op %d: accepted data without a hash", i)
				}
				for _, e := range op.DstExtents {
					if e.GetStartBlock() != payload.SparseHole && e.GetStartBlock()+e.GetNumBlocks() > blocks {
						t.Fatalf("op %d: accepted dst %v in %d blocks", i, e, blocks)
					}
				}
			}
			for _, e := range []*metadata.Extent{pu.HashTreeDataExtent, pu.HashTreeExtent, pu.FecDataExtent, pu.FecExtent} {
				if e != nil && e.GetStartBlock()+e.GetNumBlocks() > blocks {
					t.Fatalf("accepted verity extent %v in %d blocks", e, blocks)
				}
			}
			for _, m := range pu.GetMergeOperations() {
				if d := m.GetDstExtent(); d != nil && d.GetStartBlock()+d.GetNumBlocks() > blocks {
					t.Fatalf("accepted merge dst %v in %d blocks", d, blocks)
				}
			}
		}
	})
}
