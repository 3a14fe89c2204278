// Package ops executes single payload install operations (spec
// payload-format.md §3.1–3.4): REPLACE, REPLACE_BZ, REPLACE_XZ (with BCJ
// filters), REPLACE_ZSTD, ZERO, DISCARD, SOURCE_COPY, SOURCE_BSDIFF and
// BROTLI_BSDIFF, PUFFDIFF (update_engine/puffin, §3.5) and LZ4DIFF_BSDIFF /
// LZ4DIFF_PUFFDIFF (update_engine/lz4diff, §3.7), over multi-extent sources
// and destinations with sparse holes, checking data_sha256_hash and
// src_sha256_hash.
//
// ZUCCHINI and the deprecated MOVE/BSDIFF return an
// error wrapping ErrUnsupported. Operations of a raw A/B apply never read
// what other operations write, so Execute may run concurrently for different
// operations of the same partition as long as the Target's WriteAt is safe
// for concurrent use on disjoint ranges (os.File is).
package ops
