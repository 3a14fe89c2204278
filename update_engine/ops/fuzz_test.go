package ops

import (
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"

	"github.com/vabc-go/vabc/update_engine/metadata"
)

func fuzzDecompressor(f *testing.F, typ metadata.InstallOperation_Type) {
	f.Fuzz(func(t *testing.T, blob []byte) {
		r, release, err := Decompressor(typ, blob)
		if err != nil {
			return
		}
		defer release()
		io.Copy(io.Discard, io.LimitReader(r, 16<<20))
	})
}

func FuzzDecompressBZ(f *testing.F) {
	f.Add([]byte("BZh91AY&SY"))
	fuzzDecompressor(f, metadata.InstallOperation_REPLACE_BZ)
}

func FuzzDecompressXZ(f *testing.F) {
	f.Add([]byte{0xFD, '7', 'z', 'X', 'Z', 0, 0, 1})
	fuzzDecompressor(f, metadata.InstallOperation_REPLACE_XZ)
}

func FuzzDecompressZstd(f *testing.F) {
	zw, _ := zstd.NewWriter(nil)
	f.Add(zw.EncodeAll([]byte("hello hello hello hello"), nil))
	fuzzDecompressor(f, metadata.InstallOperation_REPLACE_ZSTD)
}

// FuzzExecute runs an arbitrary InstallOperation (as protobuf bytes) with an
// arbitrary blob against small in-memory images. Errors are fine; panics
// and hangs are not.
func FuzzExecute(f *testing.F) {
	seed := func(op *metadata.InstallOperation) []byte {
		b, _ := proto.Marshal(op)
		return b
	}
	f.Add(seed(&metadata.InstallOperation{Type: metadata.InstallOperation_REPLACE.Enum(), DstExtents: ext(1, 1, sparseHole, 2)}), []byte("data"))
	f.Add(seed(&metadata.InstallOperation{Type: metadata.InstallOperation_SOURCE_COPY.Enum(), SrcExtents: ext(0, 2), DstExtents: ext(2, 2)}), []byte(nil))
	f.Add(seed(&metadata.InstallOperation{Type: metadata.InstallOperation_ZERO.Enum(), DstExtents: ext(0, 1, sparseHole, 1<<40)}), []byte(nil))
	f.Add(seed(&metadata.InstallOperation{Type: metadata.InstallOperation_BROTLI_BSDIFF.Enum(), SrcExtents: ext(0, 1), DstExtents: ext(0, 1)}),
		[]byte("BSDF2\x00\x00\x00\x18\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00"))
	bsdf := []byte("BSDF2\x00\x00\x00\x18\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00")
	f.Add(seed(&metadata.InstallOperation{Type: metadata.InstallOperation_PUFFDIFF.Enum(), SrcExtents: ext(0, 1), DstExtents: ext(0, 1)}),
		append([]byte("PUF1\x00\x00\x00\x06\x12\x02\x18\x01\x1a\x00"), bsdf...))
	f.Add(seed(&metadata.InstallOperation{Type: metadata.InstallOperation_LZ4DIFF_BSDIFF.Enum(), SrcExtents: ext(0, 1), DstExtents: ext(0, 1)}),
		append([]byte("LZ4DIFF\x00\x00\x00\x00\x01\x00\x00\x00\x00"), bsdf...))
	f.Fuzz(func(t *testing.T, opBytes, blob []byte) {
		var op metadata.InstallOperation
		if err := proto.Unmarshal(opBytes, &op); err != nil {
			return
		}
		op.DataLength = proto.Uint64(uint64(len(blob)))
		const bs = 512
		src := make(mem, 8*bs)
		// A sparse-hole destination can legitimately absorb a lot of output;
		// keep fuzz iterations short.
		var total uint64
		for _, e := range op.DstExtents {
			total += e.GetNumBlocks()
		}
		if total > 1<<16 {
			return
		}
		Execute(&op, blob, Env{BlockSize: bs, Source: src, SourceSize: int64(len(src)), Target: make(mem, 8*bs)})
	})
}
