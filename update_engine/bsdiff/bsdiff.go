package bsdiff

import (
	"bytes"
	"fmt"

	"github.com/andybalholm/brotli"
	"github.com/vabc-go/vabc/update_engine/bsdiff/bz2"
	"github.com/vabc-go/vabc/update_engine/bspatch"
)

// Compressor names a BSDF2 stream compressor. The patch format (header,
// compressor bytes, offset encoding) is defined once, in package bspatch.
type Compressor = bspatch.Compressor

// Stream compressors (BSDF2 header bytes 5..7).
const (
	None   = bspatch.None // accepted by some readers, rejected by AOSP bspatch
	Bzip2  = bspatch.BZ2
	Brotli = bspatch.Brotli
)

// HeaderSize is the size of the BSDIFF40/BSDF2 header.
const HeaderSize = bspatch.HeaderSize

// Control is one bsdiff control triple.
type Control struct {
	Diff  int64 // bytes produced by adding diff bytes to old bytes
	Extra int64 // bytes copied from the extra stream
	Seek  int64 // adjustment of the old position after both
}

// Delta is an uncompressed bsdiff patch.
type Delta struct {
	Ctrl    []Control
	Diff    []byte // concatenated diff runs (new − old, bytewise)
	Extra   []byte // concatenated extra runs
	NewSize int64
}

// Diff computes the delta turning old into new.
func Diff(old, new []byte) *Delta {
	return DiffWithIndex(NewIndex(old), new)
}

// Index is a suffix array over the old data; it can be reused to diff many
// new buffers against the same old data.
type Index struct {
	old []byte
	sa  []int32
}

// NewIndex builds the suffix array of old.
func NewIndex(old []byte) *Index {
	return &Index{old: old, sa: bz2.SuffixArray(old)}
}

// search returns the position in old and length of the longest prefix of nw
// occurring in old.
func (x *Index) search(nw []byte) (pos, n int) {
	sa, old := x.sa, x.old
	if len(sa) == 0 || len(nw) == 0 {
		return 0, 0
	}
	lo, hi := 0, len(sa)-1
	for hi-lo >= 2 {
		mid := lo + (hi-lo)/2
		p := int(sa[mid])
		m := min(len(old)-p, len(nw))
		if bytes.Compare(old[p:p+m], nw[:m]) < 0 {
			lo = mid
		} else {
			hi = mid
		}
	}
	a, b := int(sa[lo]), int(sa[hi])
	la, lb := matchLen(old[a:], nw), matchLen(old[b:], nw)
	if la >= lb {
		return a, la
	}
	return b, lb
}

func matchLen(a, b []byte) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// DiffWithIndex computes the delta from the indexed old data to new.
func DiffWithIndex(x *Index, new []byte) *Delta {
	old := x.old
	oldSize, newSize := len(old), len(new)
	d := &Delta{NewSize: int64(newSize)}
	var scan, pos, length int
	var lastScan, lastPos, lastOffset int
	for scan < newSize {
		oldScore := 0
		scan += length
		scsc := scan
		for ; scan < newSize; scan++ {
			pos, length = x.search(new[scan:])
			for ; scsc < scan+length; scsc++ {
				if scsc+lastOffset < oldSize && old[scsc+lastOffset] == new[scsc] {
					oldScore++
				}
			}
			if (length == oldScore && length != 0) || length > oldScore+8 {
				break
			}
			if scan+lastOffset < oldSize && old[scan+lastOffset] == new[scan] {
				oldScore--
			}
		}
		if length == oldScore && scan != newSize {
			continue
		}
		// Extend the previous match forwards from lastScan/lastPos.
		lenF, s, best := 0, 0, 0
		for i := 0; lastScan+i < scan && lastPos+i < oldSize; {
			if old[lastPos+i] == new[lastScan+i] {
				s++
			}
			i++
			if s*2-i > best*2-lenF {
				best, lenF = s, i
			}
		}
		// Extend the new match backwards from scan/pos.
		lenB := 0
		if scan < newSize {
			s, best := 0, 0
			for i := 1; scan >= lastScan+i && pos >= i; i++ {
				if old[pos-i] == new[scan-i] {
					s++
				}
				if s*2-i > best*2-lenB {
					best, lenB = s, i
				}
			}
		}
		// Resolve an overlap between the two extensions.
		if lastScan+lenF > scan-lenB {
			overlap := lastScan + lenF - (scan - lenB)
			s, best, lenS := 0, 0, 0
			for i := 0; i < overlap; i++ {
				if new[lastScan+lenF-overlap+i] == old[lastPos+lenF-overlap+i] {
					s++
				}
				if new[scan-lenB+i] == old[pos-lenB+i] {
					s--
				}
				if s > best {
					best, lenS = s, i+1
				}
			}
			lenF += lenS - overlap
			lenB -= lenS
		}
		for i := 0; i < lenF; i++ {
			d.Diff = append(d.Diff, new[lastScan+i]-old[lastPos+i])
		}
		extra := (scan - lenB) - (lastScan + lenF)
		d.Extra = append(d.Extra, new[lastScan+lenF:lastScan+lenF+extra]...)
		d.Ctrl = append(d.Ctrl, Control{
			Diff:  int64(lenF),
			Extra: int64(extra),
			Seek:  int64((pos - lenB) - (lastPos + lenF)),
		})
		lastScan = scan - lenB
		lastPos = pos - lenB
		lastOffset = pos - scan
	}
	return d
}

// Format selects the container and the compressor of each stream.
type Format struct {
	Legacy bool // BSDIFF40: all three streams bzip2
	// BSDF2 compressors (ignored when Legacy). Zero values mean Bzip2.
	Ctrl, Diff, Extra Compressor
	// BrotliQuality is the brotli quality (0…11); 0 means 9.
	BrotliQuality int
}

// Encode serializes d in the given format.
func (d *Delta) Encode(f Format) ([]byte, error) {
	ctrl := d.ctrlBytes()
	var types [3]Compressor
	if f.Legacy {
		types = [3]Compressor{Bzip2, Bzip2, Bzip2}
	} else {
		types = [3]Compressor{f.Ctrl, f.Diff, f.Extra}
		for i := range types {
			if types[i] == None {
				types[i] = Bzip2
			}
		}
	}
	var streams [3][]byte
	for i, raw := range [][]byte{ctrl, d.Diff, d.Extra} {
		c, err := compress(types[i], raw, f.BrotliQuality)
		if err != nil {
			return nil, err
		}
		streams[i] = c
	}
	return assemble(f.Legacy, types, streams, d.NewSize), nil
}

// EncodeSmallest encodes d as BSDF2, choosing for each stream the smaller of
// the allowed compressors (bzip2 always; brotli when allowBrotli).
func (d *Delta) EncodeSmallest(allowBrotli bool, brotliQuality int) ([]byte, [3]Compressor, error) {
	var types [3]Compressor
	var streams [3][]byte
	for i, raw := range [][]byte{d.ctrlBytes(), d.Diff, d.Extra} {
		best, err := compress(Bzip2, raw, 0)
		if err != nil {
			return nil, types, err
		}
		types[i] = Bzip2
		if allowBrotli {
			b, err := compress(Brotli, raw, brotliQuality)
			if err != nil {
				return nil, types, err
			}
			if len(b) < len(best) {
				best, types[i] = b, Brotli
			}
		}
		streams[i] = best
	}
	return assemble(false, types, streams, d.NewSize), types, nil
}

func assemble(legacy bool, types [3]Compressor, streams [3][]byte, newSize int64) []byte {
	out := make([]byte, HeaderSize, HeaderSize+len(streams[0])+len(streams[1])+len(streams[2]))
	if legacy {
		copy(out, "BSDIFF40")
	} else {
		copy(out, "BSDF2")
		out[5], out[6], out[7] = byte(types[0]), byte(types[1]), byte(types[2])
	}
	PutOfft(out[8:], int64(len(streams[0])))
	PutOfft(out[16:], int64(len(streams[1])))
	PutOfft(out[24:], newSize)
	for _, s := range streams {
		out = append(out, s...)
	}
	return out
}

func (d *Delta) ctrlBytes() []byte {
	b := make([]byte, 24*len(d.Ctrl))
	for i, c := range d.Ctrl {
		PutOfft(b[24*i:], c.Diff)
		PutOfft(b[24*i+8:], c.Extra)
		PutOfft(b[24*i+16:], c.Seek)
	}
	return b
}

func compress(c Compressor, raw []byte, quality int) ([]byte, error) {
	switch c {
	case Bzip2:
		return bz2.Compress(raw, 9)
	case Brotli:
		if quality == 0 {
			quality = 9
		}
		// Brotli's high-quality hashers clear multi-MiB tables on setup,
		// which dominates for the tiny control streams; small inputs lose
		// nothing measurable at a lower quality.
		if len(raw) < 16<<10 && quality > 5 {
			quality = 5
		}
		var buf bytes.Buffer
		w := brotli.NewWriterOptions(&buf, brotli.WriterOptions{Quality: quality})
		if _, err := w.Write(raw); err != nil {
			return nil, fmt.Errorf("bsdiff: brotli: %w", err)
		}
		if err := w.Close(); err != nil {
			return nil, fmt.Errorf("bsdiff: brotli: %w", err)
		}
		return buf.Bytes(), nil
	case None:
		return append([]byte(nil), raw...), nil
	}
	return nil, fmt.Errorf("bsdiff: unknown compressor %d", uint8(c))
}

// PutOfft stores v in bsdiff's sign-magnitude little-endian int64 encoding.
func PutOfft(b []byte, v int64) { bspatch.PutOfft(b, v) }

// Offt decodes bsdiff's sign-magnitude little-endian int64.
func Offt(b []byte) int64 { return bspatch.Offt(b) }
