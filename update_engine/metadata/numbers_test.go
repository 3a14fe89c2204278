package metadata

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestFieldNumbers pins the numbers that differ between forks or were added
// late (spec §2); a typo here would silently misread real payloads.
func TestFieldNumbers(t *testing.T) {
	tests := []struct {
		msg   proto.Message
		field string
		num   protowire.Number
	}{
		{&DeltaArchiveManifest{}, "block_size", 3},
		{&DeltaArchiveManifest{}, "signatures_offset", 4},
		{&DeltaArchiveManifest{}, "minor_version", 12},
		{&DeltaArchiveManifest{}, "partitions", 13},
		{&DeltaArchiveManifest{}, "dynamic_partition_metadata", 15},
		{&DeltaArchiveManifest{}, "security_patch_level", 18},
		{&PartitionUpdate{}, "fec_roots", 16},
		{&PartitionUpdate{}, "merge_operations", 18},
		{&PartitionUpdate{}, "estimate_op_count_max", 20},
		{&DynamicPartitionMetadata{}, "vabc_compression_param", 4},
		{&DynamicPartitionMetadata{}, "cow_version", 5},
		{&DynamicPartitionMetadata{}, "compression_factor", 7},
		{&DynamicPartitionMetadata{}, "disable_ublk", 8},
		{&Signatures_Signature{}, "unpadded_signature_size", 3},
		{&CowMergeOperation{}, "src_offset", 4},
		{&InstallOperation{}, "src_sha256_hash", 9},
	}
	for _, tt := range tests {
		md := tt.msg.ProtoReflect().Descriptor()
		t.Run(string(md.Name())+"."+tt.field, func(t *testing.T) {
			fd := md.Fields().ByName(protoreflect.Name(tt.field))
			if fd == nil {
				t.Fatalf("no field %s", tt.field)
			}
			if fd.Number() != tt.num {
				t.Fatalf("field %s = %d, want %d", tt.field, fd.Number(), tt.num)
			}
		})
	}
	if f := (&Signatures_Signature{}).ProtoReflect().Descriptor().Fields().ByName("unpadded_signature_size"); f.Kind() != protoreflect.Fixed32Kind {
		t.Errorf("unpadded_signature_size kind %v, want fixed32", f.Kind())
	}
	enums := map[InstallOperation_Type]int32{
		InstallOperation_REPLACE: 0, InstallOperation_SOURCE_COPY: 4, InstallOperation_REPLACE_XZ: 8,
		InstallOperation_BROTLI_BSDIFF: 10, InstallOperation_LZ4DIFF_PUFFDIFF: 13, InstallOperation_REPLACE_ZSTD: 14,
	}
	for e, n := range enums {
		if int32(e) != n {
			t.Errorf("%v = %d, want %d", e, int32(e), n)
		}
	}
	if CowMergeOperation_COW_REPLACE != 2 || CowMergeOperation_COW_XOR != 1 {
		t.Error("CowMergeOperation numbers")
	}
	if (&PartitionUpdate{}).GetFecRoots() != 2 || (&DeltaArchiveManifest{}).GetBlockSize() != 4096 {
		t.Error("defaults")
	}
}

// TestUnknownOpDecodes documents that Go keeps unknown enum numbers (spec §2.11).
func TestUnknownOpDecodes(t *testing.T) {
	b := protowire.AppendTag(nil, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 99)
	var op InstallOperation
	if err := proto.Unmarshal(b, &op); err != nil {
		t.Fatal(err)
	}
	if op.Type == nil || int32(*op.Type) != 99 {
		t.Fatalf("type = %v, want raw 99", op.Type)
	}
}
