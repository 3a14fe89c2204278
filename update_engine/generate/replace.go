package generate

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
	"github.com/vabc-go/vabc/update_engine/bsdiff/bz2"
	"github.com/vabc-go/vabc/update_engine/metadata"
)

// Compression is a REPLACE compression the generator may choose.
type Compression string

const (
	XZ    Compression = "xz"
	BZ2   Compression = "bz2"
	ZSTD  Compression = "zstd"
	Plain Compression = "none"
)

// ParseCompressions parses a comma-separated list such as "xz,bz2".
func ParseCompressions(s string) ([]Compression, error) {
	var out []Compression
	for _, f := range strings.Split(s, ",") {
		c := Compression(strings.TrimSpace(f))
		switch c {
		case XZ, BZ2, ZSTD, Plain:
			out = append(out, c)
		case "":
		default:
			return nil, fmt.Errorf("generate: unknown compression %q (want xz, bz2, zstd or none)", c)
		}
	}
	return out, nil
}

func (c Compression) opType() metadata.InstallOperation_Type {
	switch c {
	case XZ:
		return metadata.InstallOperation_REPLACE_XZ
	case BZ2:
		return metadata.InstallOperation_REPLACE_BZ
	case ZSTD:
		return metadata.InstallOperation_REPLACE_ZSTD
	}
	return metadata.InstallOperation_REPLACE
}

func (c Compression) compress(data []byte) ([]byte, error) {
	switch c {
	case XZ:
		// Like AOSP's xz_android.cc: LZMA2, no integrity check (xz-embedded
		// compatible), dictionary no larger than the input.
		var buf bytes.Buffer
		dict := max(lzma.MinDictCap, min(len(data), 8<<20))
		w, err := xz.WriterConfig{DictCap: dict, NoCheckSum: true}.NewWriter(&buf)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(data); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	case BZ2:
		return bz2.Compress(data, 9)
	case ZSTD:
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression),
			zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
		if err != nil {
			return nil, err
		}
		defer enc.Close()
		return enc.EncodeAll(data, nil), nil
	case Plain:
		return data, nil
	}
	return nil, fmt.Errorf("generate: unknown compression %q", c)
}

// bestReplace returns the smallest REPLACE* encoding of data among the allowed
// compressions; plain REPLACE is always a candidate and wins ties.
func bestReplace(data []byte, allowed []Compression) (metadata.InstallOperation_Type, []byte, error) {
	bestType, best := metadata.InstallOperation_REPLACE, data
	for _, c := range allowed {
		if c == Plain {
			continue
		}
		b, err := c.compress(data)
		if err != nil {
			return 0, nil, fmt.Errorf("%s: %w", c, err)
		}
		if len(b) < len(best) {
			bestType, best = c.opType(), b
		}
	}
	return bestType, best, nil
}
