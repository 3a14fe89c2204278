package xzdec

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"testing"
)

// benchBlobs returns xz streams of 2 MiB chunks of executables (what a
// REPLACE_XZ payload of a system image holds), compressed with xz -6 as
// AOSP's generator does, and their total decoded size. VABC_XZ_BENCH names
// a .xz file to use instead (for profiling on a bigger sample).
func benchBlobs(b *testing.B) ([][]byte, int) {
	b.Helper()
	if f := os.Getenv("VABC_XZ_BENCH"); f != "" {
		data, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		out, err := Decode(data)
		if err != nil {
			b.Fatal(err)
		}
		return [][]byte{data}, len(out)
	}
	if _, err := exec.LookPath("xz"); err != nil {
		b.Skip("xz CLI not installed")
	}
	var raw []byte
	for _, f := range []string{"/usr/bin/xz", "/usr/bin/bash", "/usr/bin/perl", "/usr/lib/x86_64-linux-gnu/libc.so.6"} {
		if exe, err := os.ReadFile(f); err == nil {
			raw = append(raw, exe...)
		}
	}
	if len(raw) < 1<<20 {
		raw = append(raw, sampleData(4<<20)...)
	}
	var blobs [][]byte
	for off := 0; off < len(raw); off += 2 << 20 {
		chunk := raw[off:min(off+2<<20, len(raw))]
		cmd := exec.Command("xz", "-c", "-6", "-T1", "--check=none")
		cmd.Stdin = bytes.NewReader(chunk)
		out, err := cmd.Output()
		if err != nil {
			b.Fatal(err)
		}
		blobs = append(blobs, out)
	}
	return blobs, len(raw)
}

// BenchmarkDecode reports decoded bytes per second; compare with
// `xz -dc -T1` on the same streams (VABC_XZ_BENCH=file).
func BenchmarkDecode(b *testing.B) {
	blobs, n := benchBlobs(b)
	buf := make([]byte, 128<<10)
	b.SetBytes(int64(n))
	b.ResetTimer()
	for range b.N {
		for _, blob := range blobs {
			r, err := NewReader(blob)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.CopyBuffer(io.Discard, r, buf); err != nil {
				b.Fatal(err)
			}
		}
	}
}
