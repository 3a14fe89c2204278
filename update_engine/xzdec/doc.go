// Package xzdec decodes .xz streams as found in REPLACE_XZ payload blobs,
// including blocks with BCJ branch-converter filters (x86, PowerPC, IA-64,
// ARM, ARM-Thumb, ARM64, SPARC) and the delta filter, which update_engine's
// generator used from 2018 to 2024 (spec payload-format.md §3.8) and which
// github.com/ulikunitz/xz does not support.
//
// The container (stream header, block headers, index, footer, checks) is
// parsed here, and LZMA2 is decoded by this package too (lzma2.go): on
// 2 MiB chunks of executables at xz -6 it spends about 1.0–1.1× the CPU of
// liblzma 5.4 (`xz -dc -T1`; BenchmarkDecode, VABC_XZ_BENCH=file.xz to use
// a given stream). Checks None, CRC32, CRC64 and SHA-256 are
// verified; concatenated streams and stream padding are accepted. The LZMA2
// dictionary is limited to 64 MiB, like xz-embedded in update_engine.
//
// Stream layout (xz file format 1.0.4):
//
//	stream header  FD 37 7A 58 5A 00 | flags(2) | CRC32(4)
//	block*         header((b+1)*4 bytes) | LZMA2 data | pad to 4 | check
//	index          00 | count | (unpadded, uncompressed)* | pad | CRC32
//	stream footer  CRC32(4) | backward size(4) | flags(2) | "YZ"
package xzdec
