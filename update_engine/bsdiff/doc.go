// Package bsdiff computes binary deltas in the bsdiff formats update_engine
// applies (payload-format.md §3.4): the classic BSDIFF40 container (three
// bzip2 streams) and AOSP's BSDF2 container, whose control, diff and extra
// streams each name their compressor (1 = bzip2, 2 = brotli).
//
// The encoder follows Colin Percival's algorithm: a suffix array of the old
// data (built with index/suffixarray) finds the longest exact match for each
// position of the new data; matches are extended forwards and backwards into
// approximate matches whose byte differences go to the diff stream, and the
// unmatched remainder goes to the extra stream. The control stream holds
// (diff_size, extra_size, seek) triples in bsdiff's sign-magnitude int64
// encoding.
//
//	offset 0   magic "BSDIFF40" or "BSDF2" + 3 compressor bytes
//	offset 8   compressed control length  (sign-magnitude LE int64)
//	offset 16  compressed diff length
//	offset 24  new size
//	offset 32  control | diff | extra streams
//
// Output is deterministic for the same inputs and options.
package bsdiff
