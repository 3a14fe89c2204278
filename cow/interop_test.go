package cow

import (
	"bytes"
	"os/exec"
	"testing"

	"github.com/vabc-go/vabc/internal/testtool"
)

// TestCodecInterop checks the codecs against the reference implementations
// installed on the machine (skipped when missing): the zstd, brotli and xz
// command-line tools and Python's zlib (the C zlib AOSP uses) decode what we
// encode, and we decode what they encode. The LZ4 case uses the C liblz4
// through Debian's python3-lz4.
func TestCodecInterop(t *testing.T) {
	unit := testUnit(77, 65536)
	tools := []struct {
		alg        Compression
		name       string
		compress   []string
		decompress []string
	}{
		{CompressionZstd, "zstd", []string{"zstd", "-q", "-c", "-3"}, []string{"zstd", "-q", "-d", "-c"}},
		{CompressionBrotli, "brotli", []string{"brotli", "-c", "-q", "5"}, []string{"brotli", "-d", "-c"}},
		{CompressionXz, "xz", []string{"xz", "-c", "-6", "--check=crc32"}, []string{"xz", "-d", "-c"}},
		{CompressionGz, "python3", []string{"python3", "-c", "import sys,zlib; sys.stdout.buffer.write(zlib.compress(sys.stdin.buffer.read(), 9))"},
			[]string{"python3", "-c", "import sys,zlib; sys.stdout.buffer.write(zlib.decompress(sys.stdin.buffer.read()))"}},
	}
	// LZ4 block format through the C liblz4 (python3-lz4): LZ4_compress_default
	// and LZ4_decompress_safe, as AOSP uses them.
	tools = append(tools, struct {
		alg        Compression
		name       string
		compress   []string
		decompress []string
	}{CompressionLz4, "/usr/bin/python3",
		[]string{"/usr/bin/python3", "-c", "import sys,lz4.block; sys.stdout.buffer.write(lz4.block.compress(sys.stdin.buffer.read(), store_size=False))"},
		[]string{"/usr/bin/python3", "-c", "import sys,lz4.block; sys.stdout.buffer.write(lz4.block.decompress(sys.stdin.buffer.read(), uncompressed_size=65536))"}})
	for _, tool := range tools {
		t.Run(tool.alg.String(), func(t *testing.T) {
			testtool.Need(t, tool.name)
			if tool.alg == CompressionLz4 {
				if err := exec.Command(tool.name, "-c", "import lz4.block").Run(); err != nil {
					testtool.Missing(t, "python3-lz4 not installed")
				}
			}
			run := func(argv []string, in []byte) []byte {
				t.Helper()
				cmd := exec.Command(argv[0], argv[1:]...)
				cmd.Stdin = bytes.NewReader(in)
				var out, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &stderr
				if err := cmd.Run(); err != nil {
					t.Fatalf("%v: %v: %s", argv, err, stderr.String())
				}
				return out.Bytes()
			}
			// Ours → reference.
			c, err := NewCompressor(tool.alg, DefaultLevel(tool.alg), len(unit))
			if err != nil {
				t.Fatal(err)
			}
			enc, err := c.Compress(nil, unit)
			if err != nil {
				t.Fatal(err)
			}
			if got := run(tool.decompress, enc); !bytes.Equal(got, unit) {
				t.Fatalf("%s cannot decode our %v output (%d bytes back)", tool.name, tool.alg, len(got))
			}
			// Reference → ours.
			ref := run(tool.compress, unit)
			dst := make([]byte, len(unit))
			if n, err := Decompress(tool.alg, dst, ref); err != nil || n != len(unit) || !bytes.Equal(dst, unit) {
				t.Fatalf("cannot decode %s output: n=%d err=%v", tool.name, n, err)
			}
		})
	}
}
