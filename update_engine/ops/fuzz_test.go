package ops

import (
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"

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
