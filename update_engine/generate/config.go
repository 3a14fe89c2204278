package generate

import (
	"fmt"

	"github.com/vabc-go/vabc/update_engine/sign"
)

// Partition is one partition image pair. Old is nil for a full update of the
// partition.
type Partition struct {
	Name string
	Old  []byte // source image (incremental), nil for full
	New  []byte // target image
}

// VABC configures the Virtual A/B compression metadata.
type VABC struct {
	CowVersion        uint32 // 2 or 3
	Compression       string // vabc_compression_param, e.g. "lz4", "gz,9", "none"
	CompressionFactor uint64 // bytes compressed at once (COW v3): 4k…128k; 0 = unset
	XOR               bool   // emit COW_XOR merge operations for bsdiff operations
	GroupName         string // dynamic partition group (default "default")
	GroupSize         uint64 // group size (default: sum of new partition sizes)
}

// Config describes a payload to generate.
type Config struct {
	Partitions []Partition
	BlockSize  int // default 4096
	ChunkSize  int // max destination bytes per REPLACE / diff operation (default 2 MiB)
	// MinorVersion: 0 or -1 selects the default (0 for full payloads, 8 for
	// incremental ones, 10 when zstd is enabled for an incremental).
	MinorVersion int
	// Compressions allowed for REPLACE operations (default xz and bz2; zstd
	// only when listed). Plain REPLACE is always possible.
	Compressions []Compression
	// BrotliQuality for BSDF2 brotli streams (default 9; AOSP uses 11).
	BrotliQuality int
	// DisableDiff turns off bsdiff operations in incremental payloads.
	DisableDiff bool
	// DisablePuffdiff turns off PUFFDIFF operations (otherwise tried, from
	// minor version 5, for changed data holding zip entries or gzip files).
	DisablePuffdiff bool
	// LZ4Diff turns on LZ4DIFF_BSDIFF / LZ4DIFF_PUFFDIFF operations
	// (minor version ≥ 9; off by default, as in AOSP) for the changed
	// LZ4-compressed files of EROFS images (see planLZ4Diff).
	LZ4Diff bool
	// LZ4DiffCompression is the mkfs.erofs -z compressor the target image
	// was built with ("lz4", "lz4hc" or "lz4hc,N"; default
	// DefaultLZ4DiffCompression): recorded in every LZ4DIFF header for the
	// client's re-compression.
	LZ4DiffCompression string
	Threads            int // worker goroutines (default 1); output does not depend on it
	VABC               *VABC
	// Verity, if set, appends a dm-verity hash tree and FEC to every image
	// (old and new) and, in incremental payloads, sets hash_tree_* / fec_*
	// and leaves those blocks to update_engine (see Verity).
	Verity       *Verity
	MaxTimestamp int64
	Signers      []sign.Signer
}

const (
	defaultBlockSize   = 4096
	defaultChunkSize   = 2 << 20
	defaultDeltaMinor  = 8
	zstdMinor          = 10
	maxSupportedMinor  = 10
	minSourceMinor     = 2
	srcHashMinor       = 3
	zeroAndBrotliMinor = 4
)

func (c *Config) normalize() error {
	if c.BlockSize == 0 {
		c.BlockSize = defaultBlockSize
	}
	if c.BlockSize < 512 || c.BlockSize&(c.BlockSize-1) != 0 {
		return fmt.Errorf("generate: block size %d is not a power of two ≥ 512", c.BlockSize)
	}
	if c.ChunkSize == 0 {
		c.ChunkSize = defaultChunkSize
	}
	if c.ChunkSize < c.BlockSize || c.ChunkSize%c.BlockSize != 0 {
		return fmt.Errorf("generate: chunk size %d is not a positive multiple of the block size %d", c.ChunkSize, c.BlockSize)
	}
	if c.Compressions == nil {
		c.Compressions = []Compression{XZ, BZ2}
	}
	if c.Threads <= 0 {
		c.Threads = 1
	}
	if len(c.Partitions) == 0 {
		return fmt.Errorf("generate: no partitions")
	}
	delta := c.isDelta()
	seen := map[string]bool{}
	for _, p := range c.Partitions {
		if p.Name == "" || seen[p.Name] {
			return fmt.Errorf("generate: empty or duplicate partition name %q", p.Name)
		}
		seen[p.Name] = true
		if len(p.New)%c.BlockSize != 0 {
			return fmt.Errorf("generate: partition %s: new image size %d is not a multiple of the block size %d", p.Name, len(p.New), c.BlockSize)
		}
		if len(p.Old)%c.BlockSize != 0 {
			return fmt.Errorf("generate: partition %s: old image size %d is not a multiple of the block size %d", p.Name, len(p.Old), c.BlockSize)
		}
		if delta && p.Old == nil {
			return fmt.Errorf("generate: partition %s has no source image but other partitions do (incremental payloads need every source)", p.Name)
		}
	}
	zstdOn := false
	for _, cm := range c.Compressions {
		zstdOn = zstdOn || cm == ZSTD
	}
	cfgMinorDefault := c.MinorVersion <= 0
	if c.MinorVersion <= 0 {
		switch {
		case !delta:
			c.MinorVersion = 0
		case zstdOn:
			c.MinorVersion = zstdMinor
		default:
			c.MinorVersion = defaultDeltaMinor
		}
	}
	if c.LZ4Diff {
		if c.LZ4DiffCompression == "" {
			c.LZ4DiffCompression = DefaultLZ4DiffCompression
		}
		if _, _, err := ParseLZ4DiffCompression(c.LZ4DiffCompression); err != nil {
			return err
		}
		if delta && cfgMinorDefault && c.MinorVersion < lz4diffMinor {
			c.MinorVersion = lz4diffMinor
		}
		if delta && c.MinorVersion < lz4diffMinor {
			return fmt.Errorf("generate: LZ4DIFF needs minor version ≥ %d (have %d)", lz4diffMinor, c.MinorVersion)
		}
	}
	if !delta && c.MinorVersion != 0 {
		return fmt.Errorf("generate: full payloads must use minor version 0, not %d", c.MinorVersion)
	}
	if delta && (c.MinorVersion < minSourceMinor || c.MinorVersion > maxSupportedMinor) {
		return fmt.Errorf("generate: incremental payloads need minor version %d…%d, not %d", minSourceMinor, maxSupportedMinor, c.MinorVersion)
	}
	if delta && zstdOn && c.MinorVersion < zstdMinor {
		return fmt.Errorf("generate: REPLACE_ZSTD needs minor version ≥ %d in incremental payloads (have %d)", zstdMinor, c.MinorVersion)
	}
	if delta && c.MinorVersion < srcHashMinor {
		// REPLACE_XZ needs minor 3 in deltas.
		var keep []Compression
		for _, cm := range c.Compressions {
			if cm != XZ {
				keep = append(keep, cm)
			}
		}
		c.Compressions = keep
	}
	if v := c.Verity; v != nil {
		if err := v.normalize(); err != nil {
			return err
		}
		if delta && c.MinorVersion < verityMinor {
			return fmt.Errorf("generate: verity fields need minor version ≥ %d in incremental payloads (have %d)", verityMinor, c.MinorVersion)
		}
	}
	if v := c.VABC; v != nil {
		if v.CowVersion == 0 {
			v.CowVersion = 2
		}
		if v.CowVersion != 2 && v.CowVersion != 3 {
			return fmt.Errorf("generate: COW version %d (want 2 or 3)", v.CowVersion)
		}
		if v.Compression == "" {
			v.Compression = "lz4"
		}
		if f := v.CompressionFactor; f != 0 && (f < 4096 || f > 128<<10 || f&(f-1) != 0) {
			return fmt.Errorf("generate: compression factor %d (want a power of two in 4k…128k)", f)
		}
		if v.CompressionFactor != 0 && v.CowVersion < 3 {
			return fmt.Errorf("generate: compression factor needs COW version 3")
		}
		if v.Compression == "none" {
			// update_engine drops COW_XOR without compression ("XOR without
			// compression is useless", delta_performer.cc).
			v.XOR = false
		}
		if v.GroupName == "" {
			v.GroupName = "default"
		}
	}
	return nil
}

func (c *Config) isDelta() bool {
	for _, p := range c.Partitions {
		if p.Old != nil {
			return true
		}
	}
	return false
}
