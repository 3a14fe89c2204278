package generate

import (
	"archive/zip"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// Names of OTA zip entries (spec §1.3).
const (
	ZipPayload     = "payload.bin"
	ZipProperties  = "payload_properties.txt"
	ZipMetadata    = "META-INF/com/android/metadata"
	ZipMetadataPB  = "META-INF/com/android/metadata.pb"
	otaTypeAB      = 1 // OtaMetadata.OtaType.AB
	otaMetaTypeNum = 1 // OtaMetadata.type
	otaMetaPropNum = 4 // OtaMetadata.property_files (map<string,string>)
)

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// WriteOTAZip writes an A/B OTA zip holding payload.bin and
// payload_properties.txt as STORED entries (so they can be read in place)
// followed by META-INF/com/android/metadata and metadata.pb, whose
// ota-property-files / ota-streaming-property-files list name:offset:size of
// the payload, its properties and the payload_metadata.bin pseudo entry
// (header + manifest + metadata signature).
func (r *Result) WriteOTAZip(w io.Writer) error {
	cw := &countWriter{w: w}
	zw := zip.NewWriter(cw)
	var props []string
	stored := func(name string, data []byte) (int64, error) {
		fh := &zip.FileHeader{
			Name:               name,
			Method:             zip.Store,
			CRC32:              crc32.ChecksumIEEE(data),
			CompressedSize64:   uint64(len(data)),
			UncompressedSize64: uint64(len(data)),
		}
		fw, err := zw.CreateRaw(fh)
		if err != nil {
			return 0, err
		}
		if err := zw.Flush(); err != nil {
			return 0, err
		}
		off := cw.n
		if _, err := fw.Write(data); err != nil {
			return 0, err
		}
		return off, nil
	}
	off, err := stored(ZipPayload, r.Payload)
	if err != nil {
		return fmt.Errorf("generate: writing OTA zip: %w", err)
	}
	props = append(props, fmt.Sprintf("%s:%d:%d", ZipPayload, off, len(r.Payload)))
	props = append(props, fmt.Sprintf("payload_metadata.bin:%d:%d", off, r.MetadataSize+r.MetadataSignatureSize))
	pt := r.Properties()
	poff, err := stored(ZipProperties, pt)
	if err != nil {
		return fmt.Errorf("generate: writing OTA zip: %w", err)
	}
	props = append(props, fmt.Sprintf("%s:%d:%d", ZipProperties, poff, len(pt)))
	list := strings.Join(props, ",")
	kv := map[string]string{
		"ota-property-files":           list,
		"ota-streaming-property-files": list,
	}
	var text strings.Builder
	keys := []string{"ota-property-files", "ota-streaming-property-files", "ota-type"}
	vals := map[string]string{"ota-type": "AB"}
	for k, v := range kv {
		vals[k] = v
	}
	for _, k := range keys {
		fmt.Fprintf(&text, "%s=%s\n", k, vals[k])
	}
	if _, err := stored(ZipMetadata, []byte(text.String())); err != nil {
		return fmt.Errorf("generate: writing OTA zip: %w", err)
	}
	if _, err := stored(ZipMetadataPB, otaMetadataPB(kv)); err != nil {
		return fmt.Errorf("generate: writing OTA zip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("generate: writing OTA zip: %w", err)
	}
	return nil
}

// otaMetadataPB encodes build.tools.releasetools.OtaMetadata with type AB and
// the given property_files map (keys sorted for deterministic output).
func otaMetadataPB(propertyFiles map[string]string) []byte {
	var b []byte
	b = protowire.AppendTag(b, otaMetaTypeNum, protowire.VarintType)
	b = protowire.AppendVarint(b, otaTypeAB)
	keys := make([]string, 0, len(propertyFiles))
	for k := range propertyFiles {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var e []byte
		e = protowire.AppendTag(e, 1, protowire.BytesType)
		e = protowire.AppendString(e, k)
		e = protowire.AppendTag(e, 2, protowire.BytesType)
		e = protowire.AppendString(e, propertyFiles[k])
		b = protowire.AppendTag(b, otaMetaPropNum, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	return b
}
