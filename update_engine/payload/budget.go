package payload

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// MaxManifestMessages bounds the number of protobuf messages (partitions,
// operations, extents, …) a manifest may hold. Decoding costs about 100
// bytes per message whatever its encoded size: an empty Extent is 2 bytes
// on disk, so a 60 MiB manifest of them would decode to ~3 GB. Real
// manifests hold ~3 messages per operation; a 10 MiB manifest (the largest
// reported, avbroot issue 593) is well under a million.
const MaxManifestMessages = 2 << 20

// countMessages counts the embedded messages in b, a message of type md,
// without decoding it: the memory bound checked before proto.Unmarshal.
// Malformed wire data is left for Unmarshal to report.
func countMessages(b []byte, md protoreflect.MessageDescriptor, limit int) (int, error) {
	n := 0
	var walk func(b []byte, md protoreflect.MessageDescriptor) error
	walk = func(b []byte, md protoreflect.MessageDescriptor) error {
		fields := md.Fields()
		for len(b) > 0 {
			num, typ, l := protowire.ConsumeTag(b)
			if l < 0 {
				return nil
			}
			b = b[l:]
			if typ != protowire.BytesType {
				l = protowire.ConsumeFieldValue(num, typ, b)
				if l < 0 {
					return nil
				}
				b = b[l:]
				continue
			}
			v, l := protowire.ConsumeBytes(b)
			if l < 0 {
				return nil
			}
			b = b[l:]
			fd := fields.ByNumber(num)
			if fd == nil || fd.Kind() != protoreflect.MessageKind {
				continue
			}
			if n++; n > limit {
				return fmt.Errorf("manifest holds more than %d messages (decoding it would take over %d MiB)", limit, limit*100>>20)
			}
			if err := walk(v, fd.Message()); err != nil {
				return err
			}
		}
		return nil
	}
	err := walk(b, md)
	return n, err
}
