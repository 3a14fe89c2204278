package generate

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
)

// Properties returns payload_properties.txt for the payload (spec §1.3):
// FILE_HASH and METADATA_HASH are base64 SHA-256 of the whole file and of
// its first metadata_size bytes.
func (r *Result) Properties() []byte {
	fh := sha256.Sum256(r.Payload)
	mh := sha256.Sum256(r.Payload[:r.MetadataSize])
	return fmt.Appendf(nil, "FILE_HASH=%s\nFILE_SIZE=%d\nMETADATA_HASH=%s\nMETADATA_SIZE=%d\n",
		base64.StdEncoding.EncodeToString(fh[:]), len(r.Payload),
		base64.StdEncoding.EncodeToString(mh[:]), r.MetadataSize)
}
