// Package lz4ref runs liblz4 itself, for tests only: a small C program is
// compiled with gcc against the system liblz4 (Debian's liblz4-dev) into a
// temporary directory and fed cases over a pipe. Nothing here is linked into
// a product binary; only _test.go files import it.
package lz4ref

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// The reference: a C helper linked against the system liblz4 (Debian's
// liblz4-dev), built in a temporary directory for this test only.
const helperC = `
#include <lz4.h>
#include <lz4hc.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
static int rd(void *p, size_t n) { return fread(p, 1, n, stdin) == n; }
int main(void) {
	uint32_t hdr[4];
	LZ4_streamHC_t *hc = LZ4_createStreamHC();
	while (rd(hdr, sizeof hdr)) {
		uint32_t mode = hdr[0], target = hdr[2], n = hdr[3];
		int level = (int)hdr[1];
		char *src = malloc(n + 1), *dst = malloc(target + 1);
		if (!rd(src, n)) return 1;
		int consumed = (int)n, got;
		if (mode == 2) { /* clusters: destSize blocks of target bytes until the input is used */
			char *all = malloc(n + n / 255 + 16 + 1);
			int off = 0, len = 0;
			while (off < (int)n) {
				int c = (int)n - off;
				int g = LZ4_compress_HC_destSize(hc, src + off, all + len, &c, (int)target, level);
				if (g <= 0 || c <= 0 || len + g > (int)(n + n / 255 + 16)) break;
				off += c; len += g;
			}
			free(dst);
			dst = all; consumed = off; got = len;
		} else if (mode == 1) {
			got = LZ4_compress_HC(src, dst, (int)n, (int)target, level);
			consumed = got > 0 ? (int)n : 0;
		} else if (level == 0) got = LZ4_compress_destSize(src, dst, &consumed, (int)target);
		else got = LZ4_compress_HC_destSize(hc, src, dst, &consumed, (int)target, level);
		uint32_t out[2] = {(uint32_t)consumed, (uint32_t)got};
		fwrite(out, sizeof out, 1, stdout);
		fwrite(dst, 1, got, stdout);
		fflush(stdout);
		free(src); free(dst);
	}
	return 0;
}
`

// Case is one compression. In the destSize mode (Normal false) Level 0 is
// LZ4_compress_destSize and any other level LZ4_compress_HC_destSize at
// that level (liblz4 clamps it); Normal is LZ4_compress_HC with Target as
// the destination capacity (its consumed size is all of Src, or 0 when the
// block does not fit). Clusters compresses Src as mkfs.erofs does: one
// LZ4_compress_HC_destSize block of Target bytes after the other from where
// the last one stopped, until the input is used (or a block holds nothing),
// and returns the blocks concatenated.
type Case struct {
	Level, Target int
	Src           []byte
	Normal        bool
	Clusters      bool
}

// Run builds the helper and runs it over cases, returning the block and
// the consumed source size of each. It skips the test when gcc or
// liblz4-dev is missing.
func Run(t testing.TB, cases []Case) ([][]byte, []int) {
	t.Helper()
	blocks, consumed, _ := RunCPU(t, cases)
	return blocks, consumed
}

// build compiles the helper into a temporary directory.
func build(t testing.TB) string {
	t.Helper()
	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not installed")
	}
	if _, err := os.Stat("/usr/include/lz4hc.h"); err != nil {
		t.Skip("liblz4-dev not installed (scripts/deps.sh installs it)")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "h.c"), []byte(helperC), 0o644)
	bin := filepath.Join(dir, "h")
	if out, err := exec.Command(cc, "-O2", "-o", bin, filepath.Join(dir, "h.c"), "-llz4").CombinedOutput(); err != nil {
		t.Fatalf("building the liblz4 helper: %v\n%s", err, out)
	}
	return bin
}

func header(c Case) []byte {
	mode := uint32(0)
	if c.Normal {
		mode = 1
	}
	if c.Clusters {
		mode = 2
	}
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, [4]uint32{mode, uint32(int32(c.Level)), uint32(c.Target), uint32(len(c.Src))})
	return b.Bytes()
}

func reply(r io.Reader) ([]byte, int, error) {
	var h [2]uint32
	if err := binary.Read(r, binary.LittleEndian, &h); err != nil {
		return nil, 0, err
	}
	b := make([]byte, h[1])
	_, err := io.ReadFull(r, b)
	return b, int(h[0]), err
}

// RunCPU is Run that also returns the CPU time (user + system) the helper
// process spent, liblz4's compression time plus a little I/O.
func RunCPU(t testing.TB, cases []Case) ([][]byte, []int, time.Duration) {
	t.Helper()
	bin := build(t)
	var in bytes.Buffer
	for _, c := range cases {
		in.Write(header(c))
		in.Write(c.Src)
	}
	cmd := exec.Command(bin)
	cmd.Stdin = &in
	outB, err := cmd.Output()
	if err != nil {
		t.Fatalf("liblz4 helper: %v", err)
	}
	r := bufio.NewReader(bytes.NewReader(outB))
	var blocks [][]byte
	var consumed []int
	for range cases {
		b, n, err := reply(r)
		if err != nil {
			t.Fatal(err)
		}
		blocks, consumed = append(blocks, b), append(consumed, n)
	}
	return blocks, consumed, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// Helper is a running helper that compresses one case at a time (for fuzz
// targets); it stops when the test ends.
type Helper struct {
	in  io.WriteCloser
	out *bufio.Reader
}

// Start builds and starts a Helper.
func Start(t testing.TB) *Helper {
	t.Helper()
	bin := build(t)
	cmd := exec.Command(bin)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); cmd.Wait() })
	return &Helper{in: in, out: bufio.NewReader(out)}
}

// Do runs one case: liblz4's block and consumed source size.
func (h *Helper) Do(c Case) ([]byte, int, error) {
	if _, err := h.in.Write(append(header(c), c.Src...)); err != nil {
		return nil, 0, err
	}
	return reply(h.out)
}
