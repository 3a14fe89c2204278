package generate

import (
	"bytes"
	"context"
	"crypto/sha256"

	"github.com/vabc-go/vabc/update_engine/metadata"
	"google.golang.org/protobuf/proto"
)

// Payload format constants (spec §1.1).
const (
	Magic        = "CrAU"
	MajorVersion = 2
	HeaderSize   = 24
)

// Result is a generated payload.
type Result struct {
	Payload  []byte // the complete payload.bin
	Manifest *metadata.DeltaArchiveManifest
	// MetadataSize is 24 + manifest size; MetadataSignatureSize the size of
	// the metadata Signatures message (0 if unsigned).
	MetadataSize          int64
	MetadataSignatureSize int64
	Stats                 []PartitionStats
	// Images are the source (Old, nil for full) and target (New) images the
	// payload updates between: the inputs, or with Config.Verity the inputs
	// with hash tree and FEC appended.
	Images []Partition
}

// PartitionStats summarizes one partition's operations.
type PartitionStats struct {
	Name       string         `json:"name"`
	Ops        map[string]int `json:"ops"`
	BlobBytes  int64          `json:"blob_bytes"`
	MergeOps   int            `json:"merge_ops,omitempty"`
	DroppedOps int            `json:"dropped_merge_ops,omitempty"`
	CowSize    uint64         `json:"estimate_cow_size,omitempty"`
	OpCountMax uint64         `json:"estimate_op_count_max,omitempty"`
}

// Generate builds the payload described by cfg. cfg is copied, not modified.
func Generate(ctx context.Context, cfg Config) (*Result, error) {
	c := cfg
	if c.VABC != nil {
		v := *c.VABC
		c.VABC = &v
	}
	if c.Verity != nil {
		v := *c.Verity
		c.Verity = &v
	}
	c.Partitions = append([]Partition(nil), cfg.Partitions...)
	if cfg.Compressions != nil {
		// An empty, non-nil list means plain REPLACE only.
		c.Compressions = append([]Compression{}, cfg.Compressions...)
	}
	if err := c.normalize(); err != nil {
		return nil, err
	}
	delta := c.isDelta()
	var lays []verityLayout
	if v := c.Verity; v != nil {
		for i := range c.Partitions {
			p := &c.Partitions[i]
			var err error
			var lay verityLayout
			if p.New, lay, err = v.addVerity(p.Name, p.New, c.BlockSize); err != nil {
				return nil, err
			}
			if p.Old != nil {
				if p.Old, _, err = v.addVerity(p.Name, p.Old, c.BlockSize); err != nil {
					return nil, err
				}
			}
			lays = append(lays, lay)
		}
	}
	var plans []*partPlan
	for i, p := range c.Partitions {
		if delta {
			// Hash tree and FEC blocks get no operations: update_engine
			// regenerates them (spec §3.3).
			nb := len(p.New) / c.BlockSize
			if lays != nil {
				nb = lays[i].data
			}
			plans = append(plans, c.planDelta(p, nb))
		} else {
			plans = append(plans, c.planFull(p))
		}
	}
	if err := c.runUnits(ctx, plans); err != nil {
		return nil, err
	}

	m := &metadata.DeltaArchiveManifest{
		BlockSize:    proto.Uint32(uint32(c.BlockSize)),
		MinorVersion: proto.Uint32(uint32(c.MinorVersion)),
	}
	if c.MaxTimestamp != 0 {
		m.MaxTimestamp = proto.Int64(c.MaxTimestamp)
	}
	var blobs bytes.Buffer
	res := &Result{}
	var groupSize uint64
	for i, pp := range plans {
		res.Images = append(res.Images, pp.p)
		pu := &metadata.PartitionUpdate{PartitionName: proto.String(pp.p.Name)}
		if delta && lays != nil {
			lays[i].setManifest(pu)
		}
		nh := sha256.Sum256(pp.p.New)
		pu.NewPartitionInfo = &metadata.PartitionInfo{Size: proto.Uint64(uint64(len(pp.p.New))), Hash: nh[:]}
		groupSize += uint64(len(pp.p.New))
		if delta {
			oh := sha256.Sum256(pp.p.Old)
			pu.OldPartitionInfo = &metadata.PartitionInfo{Size: proto.Uint64(uint64(len(pp.p.Old))), Hash: oh[:]}
		}
		st := PartitionStats{Name: pp.p.Name, Ops: map[string]int{}}
		var xors []xorMap
		for _, u := range pp.units {
			op := u.op
			if len(u.blob) > 0 {
				op.DataOffset = proto.Uint64(uint64(blobs.Len()))
				op.DataLength = proto.Uint64(uint64(len(u.blob)))
				h := sha256.Sum256(u.blob)
				op.DataSha256Hash = h[:]
				blobs.Write(u.blob)
				st.BlobBytes += int64(len(u.blob))
			}
			pu.Operations = append(pu.Operations, op)
			st.Ops[op.GetType().String()]++
			xors = append(xors, u.xor...)
		}
		if c.VABC != nil {
			// Merges read from the partition being merged into, which has the
			// new size: sources must lie below min(old, new) blocks; the rest
			// stays replace data in the COW.
			limit := uint64(min(len(pp.p.Old), len(pp.p.New)) / c.BlockSize)
			var copies [][2]uint64
			for _, cp := range pp.copyMap {
				if cp[1] < limit {
					copies = append(copies, cp)
				}
			}
			var inBounds []xorMap
			for _, x := range xors {
				end := x.src + 1
				if x.srcOffset != 0 {
					end++
				}
				if end <= limit {
					inBounds = append(inBounds, x)
				}
			}
			ordered, dropped := orderMerge(mergeNodes(copies, inBounds))
			for _, n := range ordered {
				pu.MergeOperations = append(pu.MergeOperations, n.proto())
			}
			st.MergeOps, st.DroppedOps = len(ordered), len(dropped)
			size, count := estimateCow(&c, pp, pu, ordered)
			pu.EstimateCowSize = proto.Uint64(size)
			pu.EstimateOpCountMax = proto.Uint64(count)
			st.CowSize, st.OpCountMax = size, count
		}
		m.Partitions = append(m.Partitions, pu)
		res.Stats = append(res.Stats, st)
	}
	if v := c.VABC; v != nil {
		g := &metadata.DynamicPartitionGroup{Name: proto.String(v.GroupName), Size: proto.Uint64(groupSize)}
		if v.GroupSize != 0 {
			g.Size = proto.Uint64(v.GroupSize)
		}
		for _, p := range c.Partitions {
			g.PartitionNames = append(g.PartitionNames, p.Name)
		}
		m.DynamicPartitionMetadata = &metadata.DynamicPartitionMetadata{
			Groups:               []*metadata.DynamicPartitionGroup{g},
			SnapshotEnabled:      proto.Bool(true),
			VabcEnabled:          proto.Bool(true),
			VabcCompressionParam: proto.String(v.Compression),
			CowVersion:           proto.Uint32(v.CowVersion),
		}
		if v.CompressionFactor != 0 {
			m.DynamicPartitionMetadata.CompressionFactor = proto.Uint64(v.CompressionFactor)
		}
	}
	if err := assemble(res, m, blobs.Bytes(), c.Signers); err != nil {
		return nil, err
	}
	return res, nil
}

// COW size model (spec §3.9 and cow-format.md): op records are 20 bytes in
// v2 and 16 in v3; headers, footer, the v2 scratch buffer and the v3 resume
// buffer fit in cowFixedOverhead.
const (
	cowOpSizeV2      = 20
	cowOpSizeV3      = 16
	cowFixedOverhead = 4<<20 + 64<<10
)

// estimateCow returns upper bounds for the COW size and op count of a
// partition: every destination block that is not an unchanged in-place block
// and not covered by a COW_COPY merge operation may need a full block of data
// (replace, XOR or zero ops stored uncompressed in the worst case) and one op;
// copy ops cost an op; every install operation a label; merge sequence data 8
// bytes per ordered block; cluster ops; then fixed overhead and a 1% margin.
// The data bound holds for any compression_factor: a multi-block op never
// stores more than its blocks' raw bytes.
func estimateCow(c *Config, pp *partPlan, pu *metadata.PartitionUpdate, ordered []mergeNode) (size, ops uint64) {
	bs := uint64(c.BlockSize)
	nb := uint64(len(pp.p.New)) / bs
	var copyBlocks, orderedBlocks uint64
	for _, n := range ordered {
		orderedBlocks += n.n
		if n.typ == metadata.CowMergeOperation_COW_COPY {
			copyBlocks += n.n
		}
	}
	written := nb - uint64(pp.identity)
	dataBlocks := written - copyBlocks
	opSize := uint64(cowOpSizeV2)
	if c.VABC.CowVersion == 3 {
		opSize = cowOpSizeV3
	}
	// v2 writers add a cluster op every 200 ops (cow-format.md); written/100
	// covers that with room to spare.
	ops = written + uint64(len(pu.Operations)) + 2 + written/100 + 16
	size = dataBlocks*bs + ops*opSize + orderedBlocks*8 + cowFixedOverhead
	size += size / 100
	return size, ops
}
