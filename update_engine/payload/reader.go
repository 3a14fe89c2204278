package payload

import (
	"archive/zip"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/proto"

	"github.com/vabc-go/vabc/update_engine/metadata"
)

// Format constants (spec §1.1).
const (
	Magic        = "CrAU"
	MajorVersion = 2
	HeaderSize   = 24 // magic + major + manifest size + metadata signature size

	// MaxManifestSize bounds the manifest length read from the header. Real
	// manifests reach ~10 MiB (avbroot issue 593); the file size bounds it
	// further.
	MaxManifestSize = 64 << 20
	// MaxSignaturesSize bounds the metadata and payload signature messages. A
	// message with one RSA-4096 signature is 523 bytes.
	MaxSignaturesSize = 1 << 20

	// SparseHole is Extent.start_block for a hole: writes are dropped.
	SparseHole = math.MaxUint64
)

// Header is the fixed 24-byte payload header.
type Header struct {
	Major                 uint64 // file_format_version, must be 2
	ManifestSize          uint64 // M
	MetadataSignatureSize uint32 // S
}

// MetadataSize is 24+M: the bytes covered by METADATA_HASH and the metadata
// signature.
func (h Header) MetadataSize() int64 { return HeaderSize + int64(h.ManifestSize) }

// BlobOffset is where operation data starts: 24+M+S.
func (h Header) BlobOffset() int64 { return h.MetadataSize() + int64(h.MetadataSignatureSize) }

// ParseHeader decodes and checks the fixed header against the payload size.
func ParseHeader(b []byte, size int64) (Header, error) {
	if len(b) < HeaderSize || size < HeaderSize {
		return Header{}, &FormatError{Off: 0, Msg: "file shorter than the 24-byte header"}
	}
	if string(b[:4]) != Magic {
		return Header{}, &FormatError{Off: 0, Msg: "bad magic", Val: fmt.Sprintf("%q", b[:4])}
	}
	h := Header{
		Major:                 binary.BigEndian.Uint64(b[4:]),
		ManifestSize:          binary.BigEndian.Uint64(b[12:]),
		MetadataSignatureSize: binary.BigEndian.Uint32(b[20:]),
	}
	if h.Major != MajorVersion {
		return h, &FormatError{Off: 4, Msg: "unsupported major version", Val: h.Major}
	}
	if h.ManifestSize == 0 || h.ManifestSize > MaxManifestSize {
		return h, &FormatError{Off: 12, Msg: "manifest size out of range", Val: h.ManifestSize}
	}
	if h.MetadataSignatureSize > MaxSignaturesSize {
		return h, &FormatError{Off: 20, Msg: "metadata signature size out of range", Val: h.MetadataSignatureSize}
	}
	if h.BlobOffset() > size {
		return h, &FormatError{Off: 12, Msg: fmt.Sprintf("header+manifest+metadata signature (%d bytes) exceed file size %d", h.BlobOffset(), size)}
	}
	return h, nil
}

// Payload is an opened payload. Its methods are safe for concurrent use.
type Payload struct {
	Path     string
	Header   Header
	Manifest *metadata.DeltaArchiveManifest
	// MetadataSignature is nil when S == 0.
	MetadataSignature *metadata.Signatures
	// Properties holds payload_properties.txt when the payload came from a
	// zip that has one.
	Properties []byte
	// ZipOffset is where payload.bin starts inside its zip (0 for plain files).
	ZipOffset int64

	r      io.ReaderAt // payload.bin bytes, offset 0 = magic
	size   int64
	closer io.Closer
}

// Options configure NewReaderOptions and OpenOptions.
type Options struct {
	// VerifyMetadata, if set, is called with the SHA-256 of [0,
	// metadata_size) and the decoded metadata signature (nil when the
	// payload has none) before the manifest is parsed, as update_engine
	// does: an error refuses the payload without decoding untrusted
	// manifest bytes.
	VerifyMetadata func(digest []byte, sig *metadata.Signatures) error
}

// NewReader parses a payload held in r (size bytes). The caller keeps r open.
func NewReader(r io.ReaderAt, size int64) (*Payload, error) {
	return NewReaderOptions(r, size, nil)
}

// NewReaderOptions is NewReader with options (o may be nil).
func NewReaderOptions(r io.ReaderAt, size int64, o *Options) (*Payload, error) {
	var hb [HeaderSize]byte
	if size >= HeaderSize {
		if _, err := r.ReadAt(hb[:], 0); err != nil {
			return nil, fmt.Errorf("payload: reading header: %w", err)
		}
	}
	h, err := ParseHeader(hb[:], size)
	if err != nil {
		return nil, err
	}
	p := &Payload{Header: h, r: r, size: size}
	if h.MetadataSignatureSize > 0 {
		sb := make([]byte, h.MetadataSignatureSize)
		if _, err := r.ReadAt(sb, h.MetadataSize()); err != nil {
			return nil, fmt.Errorf("payload: reading metadata signature: %w", err)
		}
		p.MetadataSignature = new(metadata.Signatures)
		if err := proto.Unmarshal(sb, p.MetadataSignature); err != nil {
			return nil, &FormatError{Off: h.MetadataSize(), Msg: "metadata signature: " + err.Error()}
		}
	}
	mb := make([]byte, h.ManifestSize)
	if _, err := r.ReadAt(mb, HeaderSize); err != nil {
		return nil, fmt.Errorf("payload: reading manifest: %w", err)
	}
	if o != nil && o.VerifyMetadata != nil {
		d := sha256.New()
		d.Write(hb[:])
		d.Write(mb)
		if err := o.VerifyMetadata(d.Sum(nil), p.MetadataSignature); err != nil {
			return nil, fmt.Errorf("payload: metadata signature: %w", err)
		}
	}
	p.Manifest = new(metadata.DeltaArchiveManifest)
	if _, err := countMessages(mb, p.Manifest.ProtoReflect().Descriptor(), MaxManifestMessages); err != nil {
		return nil, &FormatError{Off: HeaderSize, Msg: err.Error()}
	}
	if err := proto.Unmarshal(mb, p.Manifest); err != nil {
		return nil, &FormatError{Off: HeaderSize, Msg: "manifest: " + err.Error()}
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// Open opens a payload.bin file or an OTA zip holding a stored payload.bin.
func Open(path string) (*Payload, error) { return OpenOptions(path, nil) }

// OpenOptions is Open with options (o may be nil).
func OpenOptions(path string, o *Options) (*Payload, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	var magic [4]byte
	f.ReadAt(magic[:], 0)
	var p *Payload
	if string(magic[:]) == "PK\x03\x04" {
		p, err = newZipReader(f, st.Size(), o)
	} else {
		p, err = NewReaderOptions(f, st.Size(), o)
	}
	if err != nil {
		f.Close()
		var fe *FormatError
		if errors.As(err, &fe) && fe.Path == "" {
			fe.Path = path
		}
		return nil, err
	}
	p.Path = path
	p.closer = f
	return p, nil
}

// NewZipReader opens payload.bin in place inside an OTA zip. The entry must be
// stored (uncompressed), as ota_from_target_files writes it.
func NewZipReader(r io.ReaderAt, size int64) (*Payload, error) { return newZipReader(r, size, nil) }

func newZipReader(r io.ReaderAt, size int64, o *Options) (*Payload, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("payload: reading zip: %w", err)
	}
	var pf, props *zip.File
	for _, f := range zr.File {
		switch f.Name {
		case "payload.bin":
			pf = f
		case "payload_properties.txt":
			props = f
		}
	}
	if pf == nil {
		return nil, fmt.Errorf("payload: zip has no payload.bin entry: %w", ErrCorrupt)
	}
	if pf.Method != zip.Store {
		return nil, fmt.Errorf("payload: payload.bin in zip is compressed (method %d), want stored: %w", pf.Method, ErrUnsupported)
	}
	off, err := pf.DataOffset()
	if err != nil {
		return nil, fmt.Errorf("payload: payload.bin data offset: %w", err)
	}
	n := int64(pf.UncompressedSize64)
	if off < 0 || n < 0 || off > size || n > size-off {
		return nil, fmt.Errorf("payload: payload.bin entry [%d,+%d) outside zip of %d bytes: %w", off, n, size, ErrCorrupt)
	}
	p, err := NewReaderOptions(io.NewSectionReader(r, off, n), n, o)
	if err != nil {
		return nil, err
	}
	p.ZipOffset = off
	if props != nil && props.UncompressedSize64 < 1<<16 {
		rc, err := props.Open()
		if err == nil {
			p.Properties, err = io.ReadAll(rc)
			rc.Close()
		}
		if err != nil {
			return nil, fmt.Errorf("payload: reading payload_properties.txt: %w", err)
		}
	}
	return p, nil
}

// Close closes the file opened by Open; it does nothing for NewReader.
func (p *Payload) Close() error {
	if p.closer == nil {
		return nil
	}
	c := p.closer
	p.closer = nil
	return c.Close()
}

// Size is the length of payload.bin in bytes.
func (p *Payload) Size() int64 { return p.size }

// ReaderAt gives access to the raw payload.bin bytes.
func (p *Payload) ReaderAt() io.ReaderAt { return p.r }

// BlockSize is manifest.block_size (default 4096).
func (p *Payload) BlockSize() int64 { return int64(p.Manifest.GetBlockSize()) }

// IsDelta reports whether the payload needs source partitions: any partition
// has old_partition_info, or partial_update is set (spec §2.10).
func (p *Payload) IsDelta() bool {
	if p.Manifest.GetPartialUpdate() {
		return true
	}
	for _, pu := range p.Manifest.Partitions {
		if pu.OldPartitionInfo != nil {
			return true
		}
	}
	return false
}

// Signed reports whether the payload carries a payload signature blob.
func (p *Payload) Signed() bool {
	return p.Manifest.SignaturesSize != nil && p.Manifest.GetSignaturesSize() > 0
}

// dataEnd is the end of the op-data area: the payload signature start if
// signed, the end of file otherwise.
func (p *Payload) dataEnd() int64 {
	if p.Signed() {
		return p.Header.BlobOffset() + int64(p.Manifest.GetSignaturesOffset())
	}
	return p.size
}

// Partition returns the partition update with the given name, or nil.
func (p *Payload) Partition(name string) *metadata.PartitionUpdate {
	for _, pu := range p.Manifest.Partitions {
		if pu.GetPartitionName() == name {
			return pu
		}
	}
	return nil
}

// SelectPartitions returns the named partitions in the given order, or all
// of them for an empty list. Every selected name must be a plain file name,
// since appliers write <dir>/<name>.img or <name>.cow.
func (p *Payload) SelectPartitions(names []string) ([]*metadata.PartitionUpdate, error) {
	sel := p.Manifest.Partitions
	if len(names) > 0 {
		sel = nil
		for _, name := range names {
			pu := p.Partition(name)
			if pu == nil {
				return nil, fmt.Errorf("payload has no partition %q", name)
			}
			sel = append(sel, pu)
		}
	}
	for _, pu := range sel {
		name := pu.GetPartitionName()
		if name == "" || name == "." || name == ".." || name != filepath.Base(name) {
			return nil, fmt.Errorf("partition name %q is not a plain file name", name)
		}
	}
	return sel, nil
}

// Blob reads the data of op into a new slice (nil for ops without data).
// The range was checked when the payload was opened.
func (p *Payload) Blob(op *metadata.InstallOperation) ([]byte, error) {
	n := op.GetDataLength()
	if n == 0 {
		return nil, nil
	}
	b := make([]byte, n)
	if _, err := p.r.ReadAt(b, p.Header.BlobOffset()+int64(op.GetDataOffset())); err != nil {
		return nil, fmt.Errorf("reading %d-byte blob at data_offset %d: %w", n, op.GetDataOffset(), err)
	}
	return b, nil
}

// BlobReader gives streaming access to the data of op.
func (p *Payload) BlobReader(op *metadata.InstallOperation) *io.SectionReader {
	return io.NewSectionReader(p.r, p.Header.BlobOffset()+int64(op.GetDataOffset()), int64(op.GetDataLength()))
}

// MetadataBytes returns [0, metadata_size): the header and the manifest.
func (p *Payload) MetadataBytes() ([]byte, error) {
	b := make([]byte, p.Header.MetadataSize())
	_, err := p.r.ReadAt(b, 0)
	return b, err
}

// SignatureBlob returns the raw payload signature bytes, nil if unsigned.
func (p *Payload) SignatureBlob() ([]byte, error) {
	if !p.Signed() {
		return nil, nil
	}
	b := make([]byte, p.Manifest.GetSignaturesSize())
	_, err := p.r.ReadAt(b, p.dataEnd())
	return b, err
}

// PayloadSignatures decodes the payload signature blob (nil if unsigned).
func (p *Payload) PayloadSignatures() (*metadata.Signatures, error) {
	b, err := p.SignatureBlob()
	if err != nil || b == nil {
		return nil, err
	}
	s := new(metadata.Signatures)
	if err := proto.Unmarshal(b, s); err != nil {
		return nil, &FormatError{Path: p.Path, Off: p.dataEnd(), Msg: "payload signature: " + err.Error()}
	}
	return s, nil
}

// validate checks everything in the manifest that does not need partition
// contents: block size, signature range, every op's type, data range and
// extents.
func (p *Payload) validate() error {
	m := p.Manifest
	bs := int64(m.GetBlockSize())
	if bs < 512 || bs > 1<<20 || bs&(bs-1) != 0 {
		return &FormatError{Off: HeaderSize, Msg: "manifest block_size not a power of two in [512, 1MiB]", Val: bs}
	}
	blobArea := p.size - p.Header.BlobOffset()
	if p.Signed() {
		so, ss := m.GetSignaturesOffset(), m.GetSignaturesSize()
		if ss > MaxSignaturesSize || so > uint64(blobArea) || ss > uint64(blobArea)-so {
			return &FormatError{Off: HeaderSize, Msg: fmt.Sprintf("payload signature [%d,+%d) outside the %d-byte data area", so, ss, blobArea)}
		}
		if int64(so+ss) != blobArea {
			return &FormatError{Off: HeaderSize, Msg: fmt.Sprintf("payload signature ends at data offset %d, file data area is %d bytes (trailing or missing bytes)", so+ss, blobArea)}
		}
	}
	dataArea := uint64(p.dataEnd() - p.Header.BlobOffset())
	names := map[string]bool{}
	for pi, pu := range m.Partitions {
		name := pu.GetPartitionName()
		if name == "" || names[name] {
			return &FormatError{Off: HeaderSize, Msg: fmt.Sprintf("partition %d: empty or duplicate name %q", pi, name)}
		}
		names[name] = true
		for i, op := range pu.Operations {
			if err := checkOp(op, dataArea, uint64(bs)); err != nil {
				return &OpError{Partition: name, Index: i, Type: op.GetType(), Err: err}
			}
		}
		for _, e := range []*metadata.Extent{pu.HashTreeDataExtent, pu.HashTreeExtent, pu.FecDataExtent, pu.FecExtent} {
			if e != nil {
				if err := checkExtent(e, uint64(bs)); err != nil {
					return fmt.Errorf("partition %s verity extent: %w", name, err)
				}
			}
		}
	}
	return nil
}

// maxBlocks bounds block numbers so byte offsets fit in int64.
func checkExtent(e *metadata.Extent, bs uint64) error {
	s, n := e.GetStartBlock(), e.GetNumBlocks()
	if s == SparseHole {
		if n > math.MaxInt64/bs {
			return fmt.Errorf("sparse-hole extent of %d blocks too long: %w", n, ErrCorrupt)
		}
		return nil
	}
	lim := uint64(math.MaxInt64) / bs
	if s > lim || n > lim-s {
		return fmt.Errorf("extent (%d,%d) beyond 2^63 bytes: %w", s, n, ErrCorrupt)
	}
	return nil
}

func checkOp(op *metadata.InstallOperation, dataArea, bs uint64) error {
	t := op.GetType() // unknown types are refused per partition (ValidatePartition)
	off, n := op.GetDataOffset(), op.GetDataLength()
	if off > dataArea || n > dataArea-off {
		return fmt.Errorf("data [%d,+%d) outside the %d-byte data area: %w", off, n, dataArea, ErrCorrupt)
	}
	if h := op.DataSha256Hash; h != nil && len(h) != 32 {
		return fmt.Errorf("data_sha256_hash is %d bytes, want 32: %w", len(h), ErrCorrupt)
	}
	if h := op.SrcSha256Hash; h != nil && len(h) != 32 {
		return fmt.Errorf("src_sha256_hash is %d bytes, want 32: %w", len(h), ErrCorrupt)
	}
	var dst uint64
	for _, e := range op.DstExtents {
		if err := checkExtent(e, bs); err != nil {
			return fmt.Errorf("dst extent: %w", err)
		}
		dst += e.GetNumBlocks()
		if dst > math.MaxInt64/bs {
			return fmt.Errorf("dst extents total beyond 2^63 bytes: %w", ErrCorrupt)
		}
	}
	var src uint64
	for _, e := range op.SrcExtents {
		if err := checkExtent(e, bs); err != nil {
			return fmt.Errorf("src extent: %w", err)
		}
		if e.GetStartBlock() == SparseHole {
			return fmt.Errorf("src extent is a sparse hole: %w", ErrCorrupt)
		}
		src += e.GetNumBlocks()
		if src > math.MaxInt64/bs {
			return fmt.Errorf("src extents total beyond 2^63 bytes: %w", ErrCorrupt)
		}
	}
	switch t {
	case metadata.InstallOperation_REPLACE, metadata.InstallOperation_REPLACE_BZ, metadata.InstallOperation_REPLACE_XZ,
		metadata.InstallOperation_REPLACE_ZSTD:
		if len(op.DstExtents) == 0 {
			return fmt.Errorf("no dst extents: %w", ErrCorrupt)
		}
		if op.DataLength == nil {
			return fmt.Errorf("no data_length: %w", ErrCorrupt)
		}
	case metadata.InstallOperation_SOURCE_COPY:
		if src != dst {
			return fmt.Errorf("SOURCE_COPY with %d src blocks and %d dst blocks: %w", src, dst, ErrCorrupt)
		}
	case metadata.InstallOperation_SOURCE_BSDIFF, metadata.InstallOperation_BROTLI_BSDIFF:
		if n == 0 {
			return fmt.Errorf("diff op without data: %w", ErrCorrupt)
		}
	}
	return nil
}

// ManifestBytes re-reads the raw manifest.
func (p *Payload) ManifestBytes() ([]byte, error) {
	b := make([]byte, p.Header.ManifestSize)
	_, err := p.r.ReadAt(b, HeaderSize)
	return b, err
}
