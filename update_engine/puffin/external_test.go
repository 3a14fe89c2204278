package puffin

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// writeCorpus writes the corpus inputs as files in a temporary directory.
func writeCorpus(t *testing.T, n int) (string, []string, [][]byte) {
	dir := t.TempDir()
	in := corpus(n)
	var names []string
	for i, b := range in {
		name := filepath.Join(dir, fmt.Sprintf("f%03d.txt", i))
		if err := os.WriteFile(name, b, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	return dir, names, in
}

func need(t *testing.T, tool string) string {
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Skipf("%s not installed (scripts/deps.sh installs it)", tool)
	}
	return p
}

// A python3 script writing raw deflate streams made by zlib with every level,
// strategy, window size and memory level combination we test, as
// (u32 raw length, raw, u32 stream length, stream) records.
const zlibScript = `
import sys, zlib, struct
out = open(sys.argv[1], 'wb')
strategies = [zlib.Z_DEFAULT_STRATEGY, zlib.Z_FILTERED, zlib.Z_HUFFMAN_ONLY, zlib.Z_RLE, zlib.Z_FIXED]
for name in sys.argv[2:]:
    raw = open(name, 'rb').read()
    for level in range(0, 10):
        for st in strategies:
            for wbits, mem in ((-15, 8), (-9, 1), (-12, 9)):
                if st != zlib.Z_DEFAULT_STRATEGY and wbits != -15:
                    continue
                c = zlib.compressobj(level, zlib.DEFLATED, wbits, mem, st)
                if len(raw) > 3000 and level == 6:
                    # sync flushes: empty stored blocks mid-stream
                    s = b''.join(c.compress(raw[i:i+3000]) + c.flush(zlib.Z_SYNC_FLUSH) for i in range(0, len(raw), 3000)) + c.flush()
                else:
                    s = c.compress(raw) + c.flush()
                out.write(struct.pack('<I', len(raw)) + raw + struct.pack('<I', len(s)) + s)
`

func TestRoundTripZlib(t *testing.T) {
	py := need(t, "python3")
	dir, names, _ := writeCorpus(t, 36)
	script := filepath.Join(dir, "z.py")
	os.WriteFile(script, []byte(zlibScript), 0o644)
	out := filepath.Join(dir, "streams.bin")
	if b, err := exec.Command(py, append([]string{script, out}, names...)...).CombinedOutput(); err != nil {
		t.Fatalf("python3: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for len(b) > 0 {
		rl := binary.LittleEndian.Uint32(b)
		raw := b[4 : 4+rl]
		b = b[4+rl:]
		sl := binary.LittleEndian.Uint32(b)
		s := b[4 : 4+sl]
		b = b[4+sl:]
		n += roundTripStream(t, fmt.Sprintf("zlib stream %d", n), s, raw)
	}
	if n < 1000 {
		t.Fatalf("only %d zlib streams", n)
	}
	t.Logf("%d zlib streams", n)
}

// roundTripFile checks the puffed view of a whole file (zip or gzip) and
// returns the number of deflate blocks in it.
func roundTripFile(t *testing.T, name string, data []byte, deflates []BitExtent) int {
	t.Helper()
	puffed, puffs, err := PuffStream(data, deflates)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	back, err := HuffStream(puffed, deflates, puffs)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if !bytes.Equal(back, data) {
		t.Fatalf("%s: huffed file differs", name)
	}
	return len(deflates)
}

func TestRoundTripGzipCLI(t *testing.T) {
	gz := need(t, "gzip")
	_, names, _ := writeCorpus(t, 36)
	total := 0
	for level := 1; level <= 9; level++ {
		// one multi-member file per level: gzip -c concatenates members
		data, err := exec.Command(gz, append([]string{"-c", "-n", fmt.Sprintf("-%d", level)}, names...)...).Output()
		if err != nil {
			t.Fatal(err)
		}
		d, end, ok := LocateGzip(data, 0)
		if !ok || end != len(data) {
			t.Fatalf("level %d: gzip members parse to byte %d of %d", level, end, len(data))
		}
		total += roundTripFile(t, fmt.Sprintf("gzip -%d", level), data, d)
	}
	if total < 250 {
		t.Fatalf("only %d gzip deflate blocks", total)
	}
	t.Logf("%d deflate blocks from gzip -1…-9", total)
}

func TestRoundTripZip(t *testing.T) {
	dir, names, _ := writeCorpus(t, 36)
	total := 0
	if zip, err := exec.LookPath("zip"); err == nil {
		for _, level := range []int{1, 3, 5, 6, 9} {
			out := filepath.Join(dir, fmt.Sprintf("l%d.zip", level))
			if b, err := exec.Command(zip, append([]string{"-q", "-j", "-X", fmt.Sprintf("-%d", level), out}, names...)...).CombinedOutput(); err != nil {
				t.Fatalf("zip: %v\n%s", err, b)
			}
			data, _ := os.ReadFile(out)
			total += roundTripFile(t, out, data, Locate(data, 4096))
		}
	} else {
		t.Log("zip not installed: Info-ZIP archives skipped (scripts/deps.sh installs it)")
	}
	if py, err := exec.LookPath("python3"); err == nil {
		for _, level := range []int{1, 6, 9} {
			out := filepath.Join(dir, fmt.Sprintf("py%d.zip", level))
			script := fmt.Sprintf("import zipfile,sys\nz=zipfile.ZipFile(%q,'w',zipfile.ZIP_DEFLATED,compresslevel=%d)\nfor n in sys.argv[1:]: z.write(n)\nz.close()\n", out, level)
			if b, err := exec.Command(py, append([]string{"-c", script}, names...)...).CombinedOutput(); err != nil {
				t.Fatalf("python3 zipfile: %v\n%s", err, b)
			}
			data, _ := os.ReadFile(out)
			total += roundTripFile(t, out, data, Locate(data, 1))
		}
	}
	if total < 150 {
		t.Fatalf("only %d zip deflate blocks", total)
	}
	t.Logf("%d deflate blocks from Info-ZIP zip and Python zipfile archives", total)
}
