// Package vabc writes one COW file per partition from an OTA payload, the way
// update_engine's VABC partition writer does (spec payload-format.md §3.9,
// cow-format.md §2.8, §3.4):
//
//	[sequence data: dst blocks of COW_COPY/COW_XOR merge ops, in merge order]
//	[Copy ops for every COW_COPY merge op (src ≠ dst), in merge order]
//	Label(0)
//	ops of install operation 0 → Label(1)
//	…
//	ops of install operation N-1 → Label(N)
//	[hash tree + FEC Replace ops → Label(N+1)]  (partitions with verity)
//	Label(1<<48)  (cow.EndOfInstallLabel)
//	Finalize
//
// Install operations map to COW operations as follows: REPLACE, REPLACE_BZ,
// REPLACE_XZ, REPLACE_ZSTD → Replace ops with the decompressed data; ZERO and
// DISCARD → Zero ops; SOURCE_COPY → nothing for blocks copied onto
// themselves, nothing for blocks already written as Copy ops (COW_COPY merge
// ops), Replace ops with the source data otherwise; SOURCE_BSDIFF and
// BROTLI_BSDIFF → the patched output, as Xor ops against the source for
// blocks covered by COW_XOR merge ops and Replace ops elsewhere. The new data
// of every operation is produced by package ops, the executor `payload
// extract` uses.
//
// Verity (spec §3.3): a partition with hash_tree_extent / fec_extent has no
// install operations for those blocks. After the last install op the hash
// tree over hash_tree_data_extent and then the FEC over fec_data_extent are
// computed (package verity) from the new partition as the snapshot serves it
// (old image + the COW up to Label(N)), and written as Replace ops followed
// by Label(N+1); the final check covers them.
//
// Merge hints are checked before use: a COW_COPY op is used only when a
// SOURCE_COPY operation copies exactly those blocks, a COW_XOR op only for
// blocks a bsdiff operation writes. Hints that fail the check are dropped
// (their blocks become Replace ops, which merge after every ordered op),
// so a wrong hint can cost space but never corrupt the merged image.
//
// Resume: after every label a small state file (<partition>.cow.state) records
// the label and what the COW is being written from. A rerun with the same
// payload and options reopens the COW at that label (cow.OpenWriterV2/V3)
// and continues with the install operation of that index; anything written
// after the label is overwritten. Once the COW is finalized (and verified)
// the state file says so, and a rerun skips the partition.
package vabc
