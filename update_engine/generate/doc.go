// Package generate builds Android A/B OTA payloads (payload.bin, spec
// payload-format.md) from partition images: a pure-Go counterpart of AOSP's
// delta_generator.
//
// Full payloads (no source images, minor version 0) cover every block of every
// partition with ZERO operations for zero runs and, per chunk (2 MiB by
// default), the smallest of REPLACE_XZ / REPLACE_BZ / REPLACE_ZSTD (when
// enabled) / REPLACE.
//
// Incremental payloads (source images given, minor version ≥ 2) classify each
// destination block: unchanged in place or found elsewhere in the source
// (a block hash index) → SOURCE_COPY; all zero → ZERO; otherwise the block
// belongs to a changed region, for which a bsdiff patch against a few source
// windows (same position, and next to the neighbouring copied blocks) is
// compared with the best REPLACE; the patch wins only when smaller
// (BROTLI_BSDIFF with BSDF2 from minor 4, SOURCE_BSDIFF with BSDIFF40 below).
// From minor 5, when the changed data holds zip entries or gzip files
// (update_engine/puffin Locate), a PUFFDIFF patch between the puffed views is
// tried against each window too and wins when smaller; it is applied once
// before it is accepted (Config.DisablePuffdiff, `--no-puffdiff`, turns it
// off). PUFFDIFF operations get no COW_XOR hints, as in update_engine.
//
// With Config.LZ4Diff (`--lz4diff`, off by default as in AOSP; minor ≥ 9)
// and EROFS source and target images (update_engine/erofs), every changed
// LZ4-compressed file of the target that has a compressed file of the same
// path in the source gets one LZ4DIFF_BSDIFF operation over all its blocks
// (LZ4DIFF_PUFFDIFF when the decompressed data holds deflate streams and the
// puffdiff is smaller), built as AOSP's lz4diff does: both sides
// decompressed, an inner BSDF2 patch between them, and for every target
// pcluster the sha256 of what re-compressing with
// Config.LZ4DiffCompression (mkfs.erofs' -z value; EROFS does not record
// it; default lz4hc,9, mkfs.erofs' default and what AOSP records) gives,
// plus a BSDIFF40 postfix patch wherever that differs from the real
// pcluster. The operation is applied once before it is accepted and kept
// only when smaller than the best REPLACE (plus the diff overhead AOSP
// charges) and than a BROTLI_BSDIFF of the same blocks; otherwise the
// file's blocks go through the normal choice above. LZ4DIFF operations get
// no COW_XOR hints.
// Operations carry data_sha256_hash and (minor ≥ 3) src_sha256_hash; every
// partition carries old/new partition_info; blobs are contiguous in manifest
// order (spec §1.2).
//
// Virtual A/B compression metadata (spec §2.6, §2.7, §3.9): the manifest gets
// dynamic_partition_metadata (snapshot/vabc enabled, compression parameter,
// COW version, compression factor) and each partition merge_operations —
// COW_COPY for moved blocks and COW_XOR derived from the bsdiff control
// streams — ordered so that no block is overwritten before every merge
// operation reading it has run (cycles are broken by dropping operations,
// which then become COW replace data), plus estimate_cow_size and
// estimate_op_count_max computed as upper bounds.
//
// Verity (Config.Verity, spec §3.3): each image is taken as the data region
// of a verity-enabled partition; a dm-verity hash tree over it and an RS FEC
// region over data + tree are appended to old and new images alike
// (Result.Images). Incremental payloads then carry hash_tree_* / fec_* and no
// operations for those blocks; full payloads carry no verity fields and cover
// them with operations, as delta_generator does.
//
// Signing (spec §4): with signers, the payload gets a metadata signature and a
// payload signature. Signatures are zero-padded to the key's maximum size so
// the Signatures message sizes, and therefore signatures_offset/size in the
// manifest and the header's metadata_signature_size, are fixed before the
// signed bytes are hashed.
//
// Work is spread over Config.Threads goroutines; results are placed by index,
// so the output is byte-identical for any thread count.
package generate
