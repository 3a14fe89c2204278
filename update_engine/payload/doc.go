// Package payload reads Android A/B OTA payloads (payload.bin, magic "CrAU",
// major version 2), either as a plain file or in place inside an OTA zip where
// payload.bin is a stored entry (spec payload-format.md §1).
//
// Layout (all header integers big-endian):
//
//	<start_of_file>
//	[0,4)      magic "CrAU"
//	[4,12)     major version, u64 = 2
//	[12,20)    manifest size M, u64
//	[20,24)    metadata signature size S, u32
//	[24,24+M)  DeltaArchiveManifest (protobuf)
//	[24+M, 24+M+S)  metadata signature (Signatures protobuf)
//	[blob_offset = 24+M+S, …)  operation blobs, data_offset relative to blob_offset
//	[blob_offset+signatures_offset, +signatures_size)  payload signature; end of file
//
// metadata_size = 24+M is what METADATA_SIZE/METADATA_HASH and the metadata
// signature cover. The u64 "payload_signatures_message_size" mentioned in the
// AOSP proto header comment does not exist on disk.
//
// Every length read from the file is bounded by the file size before it is
// used to allocate, and the number of manifest messages is counted on the
// wire before decoding (MaxManifestMessages). Options.VerifyMetadata checks
// the metadata signature before the manifest is parsed, as update_engine
// does. Appliers then run ValidateManifest (minor version against the
// payload kind) and ValidatePartition on each selected partition (known op
// types, named by op index; sizes within Limits; every extent inside its
// partition; mandatory hashes), before planning or allocating anything.
// Operation types unknown to this package are thus refused per partition
// (Go's protobuf runtime keeps unknown proto2 enum numbers, spec §2.11).
package payload
