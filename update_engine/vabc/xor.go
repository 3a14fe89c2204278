package vabc

import (
	"errors"
	"fmt"
	"io"
)

// xorData XORs one new block with the source bytes at x. When the unaligned
// read would pass the end of the source image, the aligned source block is
// used instead (update_engine splits such reads the same way); when even
// that is outside, ok is false and the block is written as Replace data.
func (pw *partWriter) xorData(newBlock []byte, x xorSrc) (out []byte, srcBlock uint64, off uint16, ok bool, err error) {
	bs := pw.bs
	at := int64(x.block)*bs + int64(x.offset)
	if at+bs > pw.srcSz {
		at = int64(x.block) * bs
		x.offset = 0
		if at+bs > pw.srcSz {
			return nil, 0, 0, false, nil
		}
	}
	out = make([]byte, bs)
	if _, err := pw.src.ReadAt(out, at); err != nil && !(errors.Is(err, io.EOF)) {
		return nil, 0, 0, false, fmt.Errorf("reading XOR source at %d: %w", at, err)
	}
	for j := range out {
		out[j] ^= newBlock[j]
	}
	return out, x.block, uint16(x.offset), true, nil
}
