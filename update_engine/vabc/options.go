package vabc

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/update_engine/payload"
)

// ErrUnsupported marks payloads this package cannot turn into COW files.
var ErrUnsupported = errors.New("vabc: unsupported")

// Options configure Write. Zero values take the manifest's settings.
type Options struct {
	OutDir     string   // where <partition>.cow is written
	OldDir     string   // where the source <partition>.img are (delta payloads)
	Partitions []string // subset; empty means all
	// CowVersion overrides dynamic_partition_metadata.cow_version (2 or 3;
	// 0 = manifest, default 2).
	CowVersion uint32
	// Compression overrides vabc_compression_param ("lz4", "gz,9", "none";
	// "" = manifest, default none).
	Compression string
	// CompressionFactor overrides compression_factor (v3 only; 0 = manifest,
	// default 4 KiB).
	CompressionFactor uint64
	// DisableXOR ignores COW_XOR merge ops (update_engine without
	// ro.virtual_ab.compression.xor.enabled writes diff output as Replace
	// ops). XOR is also off when the compression is none, as update_engine.
	DisableXOR bool
	// Threads computes the new data of that many operations at once
	// (<= 0: GOMAXPROCS). Output does not depend on it.
	Threads int
	// Progress, if set, is called with destination bytes done and the total.
	Progress func(done, total int64)
	// SkipVerify skips the final check: the snapshot view (old image + COW,
	// as snapuserd serves it) must hash to new_partition_info.hash, and the
	// merge order must pass VerifyMergeOps. A COW that fails is removed.
	SkipVerify bool
	// WrapFile, if set, wraps each COW file before the writer sees it
	// (fault injection in tests).
	WrapFile func(cow.File) cow.File
	// Limits bound what the payload may ask for (partition sizes) and
	// whether unhashed operations are accepted.
	Limits payload.Limits
}

// Result describes one written COW file.
type Result struct {
	Name              string  `json:"name"`
	Path              string  `json:"path"`
	Size              int64   `json:"size"`
	Verified          bool    `json:"verified"` // snapshot view matched new_partition_info.hash
	CowVersion        uint32  `json:"cow_version"`
	Compression       string  `json:"compression"`
	CompressionFactor uint32  `json:"compression_factor,omitempty"`
	Operations        int     `json:"operations"`
	ResumedAt         *uint64 `json:"resumed_at_label,omitempty"`
	AlreadyComplete   bool    `json:"already_complete,omitempty"` // finished by an earlier run, skipped
	SequenceBlocks    int     `json:"sequence_blocks"`
	CopyBlocks        int     `json:"copy_blocks"`
	XorBlocks         int     `json:"xor_blocks"`
	ReplaceBlocks     int     `json:"replace_blocks"`
	ZeroBlocks        int     `json:"zero_blocks"`
	DroppedHints      int     `json:"dropped_merge_hint_blocks,omitempty"`
}

// settings are the resolved writer settings of one payload.
type settings struct {
	version    uint32
	comp       string
	alg        cow.Compression
	level      int
	factor     uint32
	xor        bool
	manifestID string
}

func resolve(p *payload.Payload, opts Options) (settings, error) {
	dpm := p.Manifest.GetDynamicPartitionMetadata()
	s := settings{version: dpm.GetCowVersion(), comp: dpm.GetVabcCompressionParam()}
	if opts.CowVersion != 0 {
		s.version = opts.CowVersion
	}
	if s.version == 0 {
		s.version = 2
	}
	if s.version != 2 && s.version != 3 {
		return s, fmt.Errorf("vabc: COW version %d: only 2 and 3 are supported", s.version)
	}
	if opts.Compression != "" {
		s.comp = opts.Compression
	}
	if s.comp == "" {
		s.comp = "none"
	}
	alg, level, err := cow.ParseCompressionOption(s.comp)
	if err != nil {
		return s, fmt.Errorf("vabc: compression %q: %w", s.comp, err)
	}
	s.alg, s.level = alg, level
	f := dpm.GetCompressionFactor()
	if opts.CompressionFactor != 0 {
		f = opts.CompressionFactor
	}
	if s.version == 3 && f != 0 {
		if f > cow.MaxCompressionSize || f&(f-1) != 0 || f < uint64(p.BlockSize()) {
			return s, fmt.Errorf("vabc: compression factor %d: want a power of two from the block size to %d", f, cow.MaxCompressionSize)
		}
		s.factor = uint32(f)
	}
	s.xor = !opts.DisableXOR && alg != cow.CompressionNone
	mb, err := p.ManifestBytes()
	if err != nil {
		return s, fmt.Errorf("vabc: reading manifest: %w", err)
	}
	h := sha256.New()
	h.Write(mb)
	fmt.Fprintf(h, "\x00v%d %s f%d x%v", s.version, s.comp, s.factor, s.xor)
	s.manifestID = hex.EncodeToString(h.Sum(nil))
	return s, nil
}

// String summarizes a result on one line.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d bytes, COW v%d %s", r.Path, r.Size, r.CowVersion, r.Compression)
	if r.CompressionFactor != 0 {
		fmt.Fprintf(&b, " factor %d", r.CompressionFactor)
	}
	fmt.Fprintf(&b, ", %d ops: copy %d xor %d replace %d zero %d blocks", r.Operations, r.CopyBlocks, r.XorBlocks, r.ReplaceBlocks, r.ZeroBlocks)
	if r.ResumedAt != nil {
		fmt.Fprintf(&b, " (resumed at label %d)", *r.ResumedAt)
	}
	if r.Verified {
		b.WriteString(", hash ok")
	}
	if r.AlreadyComplete {
		b.WriteString(" (complete from an earlier run)")
	}
	return b.String()
}
