package payload

import (
	"fmt"

	"github.com/vabc-go/vabc/update_engine/metadata"
)

// Minor versions a client accepts (spec §2.10, DeltaPerformer::ValidateManifest).
const (
	FullMinorVersion     = 0  // full payloads must say exactly this
	MinDeltaMinorVersion = 2  // kSourceMinorPayloadVersion
	MaxMinorVersion      = 10 // REPLACE_ZSTD (Android 17)
)

// DefaultMaxPartitionSize bounds the size a payload may give a partition
// (new_partition_info.size, or the furthest extent) unless Limits say
// otherwise. The largest dynamic partitions seen in OTAs are a few GiB;
// the bound keeps a 3 KB payload from asking for a 1 TiB image.
const DefaultMaxPartitionSize = 64 << 30

// Limits configure ValidatePartition.
type Limits struct {
	// MaxPartitionSize bounds each partition's size in bytes (0:
	// DefaultMaxPartitionSize).
	MaxPartitionSize int64
	// AllowUnhashed accepts operations with data but no data_sha256_hash
	// and partitions without new_partition_info.hash. By default both are
	// refused, as update_engine does with hash_checks_mandatory.
	AllowUnhashed bool
}

// ValidateManifest checks the payload-wide rules update_engine applies
// before any partition: the minor version matches the payload kind (full:
// exactly 0; delta: MinDeltaMinorVersion..MaxMinorVersion). The block size
// and every op's data range were checked when the payload was opened.
func (p *Payload) ValidateManifest() error {
	minor := p.Manifest.GetMinorVersion()
	if !p.IsDelta() {
		if minor != FullMinorVersion {
			return fmt.Errorf("payload: full payload (no old_partition_info, not partial_update) with minor_version %d, want %d: %w", minor, FullMinorVersion, ErrUnsupported)
		}
		return nil
	}
	if minor < MinDeltaMinorVersion || minor > MaxMinorVersion {
		return fmt.Errorf("payload: delta payload with minor_version %d, supported %d..%d: %w", minor, MinDeltaMinorVersion, MaxMinorVersion, ErrUnsupported)
	}
	return nil
}

// PartitionSize is the size of the new image: new_partition_info.size, or
// else the end of the furthest destination or verity extent. It is only
// meaningful after ValidatePartition succeeded.
func PartitionSize(pu *metadata.PartitionUpdate, bs int64) int64 {
	if ni := pu.NewPartitionInfo; ni != nil && ni.Size != nil {
		return int64(ni.GetSize())
	}
	var end uint64
	upd := func(e *metadata.Extent) {
		if e != nil && e.GetStartBlock() != SparseHole && e.GetNumBlocks() > 0 {
			end = max(end, e.GetStartBlock()+e.GetNumBlocks())
		}
	}
	for _, op := range pu.Operations {
		for _, e := range op.DstExtents {
			upd(e)
		}
	}
	for _, e := range []*metadata.Extent{pu.HashTreeDataExtent, pu.HashTreeExtent, pu.FecDataExtent, pu.FecExtent} {
		upd(e)
	}
	return int64(end) * bs
}

// ValidatePartition checks one partition before anything is planned or
// allocated: every op type is known (the error names the op index), the
// partition size is within the limit, every destination, source, verity
// and merge extent lies inside its partition, and (unless AllowUnhashed)
// every op with data carries data_sha256_hash and the partition
// new_partition_info.hash. Errors name the partition; other partitions may
// still be valid.
func (p *Payload) ValidatePartition(pu *metadata.PartitionUpdate, lim Limits) error {
	name := pu.GetPartitionName()
	bs := uint64(p.BlockSize())
	maxSize := lim.MaxPartitionSize
	if maxSize <= 0 {
		maxSize = DefaultMaxPartitionSize
	}
	for i, op := range pu.Operations {
		if t := op.GetType(); !KnownType(t) {
			return &OpError{Partition: name, Index: i, Type: t, Err: fmt.Errorf("unknown op type %d: %w", int32(t), ErrUnsupported)}
		}
	}
	// Sizes: every extent was bounded below 2^63 bytes at open, so the
	// sums below do not overflow.
	size := PartitionSize(pu, int64(bs))
	if size < 0 || size > maxSize {
		return fmt.Errorf("partition %s: size %d bytes exceeds the limit of %d bytes: %w", name, uint64(size), maxSize, ErrUnsupported)
	}
	blocks := (uint64(size) + bs - 1) / bs
	var oldBlocks uint64 = 1<<63 - 1
	if oi := pu.OldPartitionInfo; oi != nil && oi.Size != nil {
		if int64(oi.GetSize()) < 0 || int64(oi.GetSize()) > maxSize {
			return fmt.Errorf("partition %s: old_partition_info.size %d exceeds the limit of %d bytes: %w", name, oi.GetSize(), maxSize, ErrUnsupported)
		}
		oldBlocks = (oi.GetSize() + bs - 1) / bs
	}
	inside := func(e *metadata.Extent, limit uint64) bool {
		return e.GetStartBlock() <= limit && e.GetNumBlocks() <= limit-e.GetStartBlock()
	}
	for i, op := range pu.Operations {
		for _, e := range op.DstExtents {
			if e.GetStartBlock() != SparseHole && !inside(e, blocks) {
				return &OpError{Partition: name, Index: i, Type: op.GetType(), Err: fmt.Errorf("dst extent (%d,%d) beyond the partition's %d blocks: %w", e.GetStartBlock(), e.GetNumBlocks(), blocks, ErrCorrupt)}
			}
		}
		for _, e := range op.SrcExtents {
			if !inside(e, oldBlocks) {
				return &OpError{Partition: name, Index: i, Type: op.GetType(), Err: fmt.Errorf("src extent (%d,%d) beyond the old partition's %d blocks: %w", e.GetStartBlock(), e.GetNumBlocks(), oldBlocks, ErrCorrupt)}
			}
		}
		if !lim.AllowUnhashed && op.GetDataLength() > 0 && op.DataSha256Hash == nil {
			return &OpError{Partition: name, Index: i, Type: op.GetType(), Err: fmt.Errorf("operation has data but no data_sha256_hash (hash checks are mandatory; --allow-unhashed accepts it): %w", ErrCorrupt)}
		}
	}
	for _, v := range []struct {
		what string
		e    *metadata.Extent
	}{{"hash_tree_data_extent", pu.HashTreeDataExtent}, {"hash_tree_extent", pu.HashTreeExtent}, {"fec_data_extent", pu.FecDataExtent}, {"fec_extent", pu.FecExtent}} {
		if v.e != nil && (v.e.GetStartBlock() == SparseHole || !inside(v.e, blocks)) {
			return fmt.Errorf("partition %s: %s (%d,%d) beyond the partition's %d blocks: %w", name, v.what, v.e.GetStartBlock(), v.e.GetNumBlocks(), blocks, ErrCorrupt)
		}
	}
	var mergeTotal uint64
	for mi, m := range pu.GetMergeOperations() {
		// Source extents are hints checked block by block against the
		// real old image by the planner; only the destination bounds work.
		if d := m.GetDstExtent(); d != nil {
			if !inside(d, blocks) {
				return fmt.Errorf("partition %s merge op %d: dst extent (%d,%d) beyond the partition's %d blocks: %w", name, mi, d.GetStartBlock(), d.GetNumBlocks(), blocks, ErrCorrupt)
			}
			mergeTotal += d.GetNumBlocks()
			if mergeTotal > blocks {
				return fmt.Errorf("partition %s merge op %d: merge operations cover %d blocks, more than the partition's %d: %w", name, mi, mergeTotal, blocks, ErrCorrupt)
			}
		}
	}
	if !lim.AllowUnhashed && len(pu.GetNewPartitionInfo().GetHash()) == 0 {
		return fmt.Errorf("partition %s: no new_partition_info.hash (hash checks are mandatory; --allow-unhashed accepts it): %w", name, ErrCorrupt)
	}
	return nil
}
