package cow

import (
	"bytes"
	"testing"
)

// Parse cost of large op streams (100k data ops, no payloads but one
// Replace block in 16, like a mostly-copy OTA).
func benchImageV2(b *testing.B) []byte {
	bl := newV2Builder(b, hdrV2(DefaultClusterOps, 0))
	p := []byte("payload")
	for i := range 100000 {
		if i%16 == 0 {
			bl.add(Op{Type: OpReplace, NewBlock: uint64(i)}, p)
		} else {
			bl.add(Op{Type: OpCopy, NewBlock: uint64(i), Source: uint64(i + 1)}, nil)
		}
	}
	return bl.finalize()
}

func benchImageV3(b *testing.B) []byte {
	v := &v3Image{h: newV3Header(100000, CompressionNone, 0)}
	p := []byte("payload")
	for i := range 100000 {
		if i%16 == 0 {
			v.ops = append(v.ops, Op{Type: OpReplace, NewBlock: uint64(i)})
			v.data = append(v.data, p)
		} else {
			v.ops = append(v.ops, Op{Type: OpCopy, NewBlock: uint64(i), Source: uint64(i + 1)})
			v.data = append(v.data, nil)
		}
	}
	return v.build(b)
}

func benchParse(b *testing.B, img []byte) {
	b.SetBytes(int64(len(img)))
	b.ReportAllocs()
	for b.Loop() {
		r, err := NewReader(bytes.NewReader(img), int64(len(img)), nil)
		if err != nil {
			b.Fatal(err)
		}
		if len(r.MergeOrder()) != 100000 {
			b.Fatal("merge order")
		}
	}
}

func BenchmarkParseV2_100kOps(b *testing.B) { benchParse(b, benchImageV2(b)) }
func BenchmarkParseV3_100kOps(b *testing.B) { benchParse(b, benchImageV3(b)) }
