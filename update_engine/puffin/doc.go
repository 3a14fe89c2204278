// Package puffin implements AOSP puffin (spec payload-format.md §3.5): the
// puffer, which rewrites a deflate bit stream as a byte-aligned "puff" stream,
// the huffer, which turns a puff stream back into the identical deflate bits,
// the puffed view of a file with deflate streams inside it, and puffpatch /
// puffdiff over BSDF2 / BSDIFF40 inner patches (the PUFFDIFF install
// operation).
//
// Puff stream (per deflate block, big-endian integers):
//
//	block metadata  u16 (n-1), then n bytes: header F TT SSSSS (BFINAL, BTYPE,
//	                the padding bits before a stored block's LEN); a dynamic
//	                block adds HLIT, HDIST, HCLEN, the code-length code lengths
//	                two per byte (high nibble first, in permuted order) and
//	                the code-length symbols: 0-15, 16+x (repeat, x 2 bits),
//	                20+x (zeros, x 3 bits), 28+x (zeros, x 7 bits)
//	literals        0x00|(n-1) for 1…127 bytes, or 0x7F + u16 (n-128) for
//	                128…65663 bytes, then the bytes
//	length/distance 0x80|(len-3) for 3…129, or 0xFF + (len-130) for 130…258;
//	                then u16 (distance-1)
//	end of block    0xFF 0x81
//
// A stored block is its metadata, its bytes as literals and an end of block.
//
// Puffed view of a file: every deflate extent (a bit range, normally one
// compressed block) is replaced by its puff; the bits between deflates are
// kept, the part of each byte that holds them shifted down to bit 0 (see
// stream.go). The puffs' byte extents follow from the deflates exactly as
// AOSP's FindPuffLocations computes them.
//
// What this package does not do: ZUCCHINI inner patches (PatchHeader type 1)
// are refused with ErrUnsupported. A few valid deflate encodings cannot be
// expressed as a puff and are refused by the puffer with ErrUnrepresentable
// (length 258 coded as symbol 284 + 31, stored-block padding bits whose value
// does not fit 5 bits). Code-length repeats that run from the literal/length
// lengths into the distance lengths are puffed and huffed correctly here,
// while AOSP's puffer cannot read them; Locate therefore leaves such blocks,
// and the others an AOSP client would misread near the end of a buffer (the
// "bad distance cache" of crbug 915559 and its literal/length twin), out of
// generated patches.
package puffin
