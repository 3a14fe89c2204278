package liblz4

import "errors"

// ErrCorrupt marks malformed LZ4 blocks.
var ErrCorrupt = errors.New("liblz4: corrupt block")

// DecompressPartial decodes the LZ4 block src, appending to dst, and stops
// once target bytes are produced (LZ4_decompress_safe_partial with
// targetOutputSize = dstCapacity = target). Matches may not reach before the
// block's own output. It returns dst with the produced bytes appended; fewer
// than target if the block ends first.
func DecompressPartial(dst, src []byte, target int) ([]byte, error) {
	base := len(dst)
	if target < 0 {
		return dst, ErrCorrupt
	}
	dst = growCap(dst, target)
	i := 0
	for len(dst)-base < target {
		if i >= len(src) {
			return dst, ErrCorrupt
		}
		tok := src[i]
		i++
		lit := int(tok >> 4)
		if lit == 15 {
			for {
				if i >= len(src) {
					return dst, ErrCorrupt
				}
				c := src[i]
				i++
				lit += int(c)
				if c != 255 {
					break
				}
			}
		}
		if lit > len(src)-i {
			return dst, ErrCorrupt
		}
		n := min(lit, target-(len(dst)-base))
		dst = append(dst, src[i:i+n]...)
		i += lit
		if len(dst)-base == target || i == len(src) {
			break
		}
		if len(src)-i < 2 {
			return dst, ErrCorrupt
		}
		off := int(src[i]) | int(src[i+1])<<8
		i += 2
		if off == 0 || off > len(dst)-base {
			return dst, ErrCorrupt
		}
		ml := int(tok&15) + minMatch
		if tok&15 == 15 {
			for {
				if i >= len(src) {
					return dst, ErrCorrupt
				}
				c := src[i]
				i++
				ml += int(c)
				if c != 255 {
					break
				}
			}
		}
		ml = min(ml, target-(len(dst)-base))
		for k := 0; k < ml; k++ {
			dst = append(dst, dst[len(dst)-off])
		}
	}
	return dst, nil
}

func growCap(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), len(b)+n)
	copy(nb, b)
	return nb
}
