package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vabc-go/vabc/cow"
)

const (
	hostileDir   = "testdata/hostile"
	maxCommitted = 256 << 10
)

// v2Header is an unclustered v2 header without scratch.
func v2Header() []byte {
	h := cow.Header{Magic: cow.Magic, MajorVersion: 2, HeaderSize: 38, FooterSize: cow.FooterSize, OpSize: cow.OpV2Size, BlockSize: 4096}
	b, err := h.MarshalBinary()
	if err != nil {
		panic(err)
	}
	return b[:38]
}

func withFooter(b []byte, nops int) []byte {
	return cow.AppendFooter(b, cow.Footer{NumOps: uint64(nops), OpsSize: uint64(nops) * cow.OpV2Size})
}

// seqBomb: 2048 sequence ops whose payloads all point at the same 64 KiB,
// claiming 33M sequence entries for a file with one data op.
func seqBomb() []byte {
	b := v2Header()
	const n = 2048
	dataAt := uint64(38 + (n+1)*cow.OpV2Size + cow.FooterSize)
	for range n {
		b = cow.AppendOpV2(b, cow.Op{Type: cow.OpSequence, DataLength: 65532, Source: dataAt})
	}
	b = cow.AppendOpV2(b, cow.Op{Type: cow.OpZero, NewBlock: 0})
	b = withFooter(b, n+1)
	return append(b, make([]byte, 65536)...)
}

// zeroOps: n Zero ops and a footer (20 bytes per op).
func zeroOps(n int) []byte {
	b := make([]byte, 0, 38+n*cow.OpV2Size+cow.FooterSize)
	b = append(b, v2Header()...)
	for i := range n {
		b = cow.AppendOpV2(b, cow.Op{Type: cow.OpZero, NewBlock: uint64(i)})
	}
	return withFooter(b, n)
}

// v3Snappy is a v3 file using the non-AOSP snappy id 0xF0.
func v3Snappy() []byte {
	dir, err := os.MkdirTemp("", "v3snappy")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	f, err := os.Create(filepath.Join(dir, "x.cow"))
	if err != nil {
		panic(err)
	}
	defer f.Close()
	w, err := cow.NewWriterV3(f, cow.WriterOptions{Compression: cow.CompressionSnappy, AllowNonstandard: true, OpCountMax: 4, NoScratch: true})
	if err != nil {
		panic(err)
	}
	w.AddRawBlocks(0, bytes.Repeat([]byte{3}, 4096))
	w.AddLabel(1)
	if err := w.Finalize(); err != nil {
		panic(err)
	}
	w.Close()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		panic(err)
	}
	return b
}

type cowCase struct {
	name   string
	gen    func(path string) error // writes the file (sparse ones by truncation)
	ops    int                     // op records in the file, for the memory bound
	args   []string
	want   string // error fragment, "" = success
	commit bool
	file   string // file name stem when shared with another case (default: name)
}

func bytesGen(f func() []byte) func(string) error {
	return func(path string) error { return os.WriteFile(path, f(), 0o644) }
}

func cowCases() []cowCase {
	sparse := func(path string) error {
		// 256 MiB, all zero between the header and a footer at the end.
		const size = 256 << 20
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		f.Write(v2Header())
		n := (size - 38 - cow.FooterSize) / cow.OpV2Size
		foot := withFooter(nil, n)
		_, err = f.WriteAt(foot, int64(38+n*cow.OpV2Size))
		return err
	}
	const big = 8 << 20
	return []cowCase{
		{"v2-seq-bomb", bytesGen(seqBomb), 2049, []string{"inspect"}, "sequence ops hold 33552384 entries but the file has only 1 data ops", true, ""},
		{"v2-seq-bomb-json", bytesGen(seqBomb), 2049, []string{"inspect", "--json"}, "sequence ops hold", true, "v2-seq-bomb"},
		{"v2-sparse-256MiB", sparse, (256 << 20) / 20, []string{"inspect", "--json"}, "v2: unknown op type 0", false, ""},
		{"v2-zero-ops-small", bytesGen(func() []byte { return zeroOps(1000) }), 1000, []string{"inspect", "--json"}, "", true, ""},
		{"v2-8M-ops-json", bytesGen(func() []byte { return zeroOps(big) }), big, []string{"inspect", "--json"}, "", false, "v2-8M-ops"},
		{"v2-8M-ops-text", func(path string) error {
			if _, err := os.Stat(path); err == nil {
				return nil // written by v2-8M-ops-json
			}
			return bytesGen(func() []byte { return zeroOps(big) })(path)
		}, big, []string{"inspect", "--show-ops"}, "", false, "v2-8M-ops"},
		{"v3-snappy-id", bytesGen(v3Snappy), 2, []string{"inspect"}, "non-AOSP extension", true, ""},
	}
}

// TestHostileCOWCorpus runs cowctl on crafted COW files: expected outcome,
// < 5 s, and peak RSS ≤ 4 × 20 B per op + 64 MiB (the bound: four
// times AOSP's per-op memory).
func TestHostileCOWCorpus(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "cowctl")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	gen := t.TempDir()
	if *update {
		os.MkdirAll(hostileDir, 0o755)
	}
	var table strings.Builder
	for _, tc := range cowCases() {
		t.Run(tc.name, func(t *testing.T) {
			stem := tc.name
			if tc.file != "" {
				stem = tc.file
			}
			path := filepath.Join(hostileDir, stem+".cow")
			if !tc.commit {
				path = filepath.Join(gen, stem+".cow")
			}
			if _, err := os.Stat(path); err != nil || *update || !tc.commit {
				if tc.commit && !*update {
					t.Fatalf("%s is missing; run go test -run TestHostileCOWCorpus -update", path)
				}
				if err := tc.gen(path); err != nil {
					t.Fatal(err)
				}
			}
			st, _ := os.Stat(path)
			if tc.commit && st.Size() > maxCommitted {
				t.Fatalf("%s is %d bytes, too large to commit", path, st.Size())
			}
			rssFile := filepath.Join(t.TempDir(), "rss")
			cmd := exec.Command(bin, append(tc.args, path)...)
			cmd.Env = append(os.Environ(), "VABC_PEAK_RSS_FILE="+rssFile)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			devnull, _ := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			defer devnull.Close()
			cmd.Stdout = devnull // the 8M-op report is discarded as it streams
			start := time.Now()
			err := cmd.Run()
			took := time.Since(start)
			msg := strings.TrimSpace(stderr.String())
			if tc.want == "" && err != nil {
				t.Errorf("failed: %v: %s", err, msg)
			}
			if tc.want != "" && (err == nil || !strings.Contains(msg, tc.want)) {
				t.Errorf("err %v, stderr %q, want %q", err, msg, tc.want)
			}
			b, rerr := os.ReadFile(rssFile)
			var kb int64
			if rerr != nil {
				t.Fatalf("no peak RSS report: %v", rerr)
			}
			fmt.Sscanf(string(b), "%d kB", &kb)
			rss := kb << 10
			limit := int64(4*20*tc.ops) + 64<<20
			if rss > limit {
				t.Errorf("peak RSS %d MiB, limit %d MiB", rss>>20, limit>>20)
			}
			// The 5 s limit is on CPU time: the machine running the tests
			// may give the process a fraction of a core (wall time logged).
			cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			if cpu > 5*time.Second {
				t.Errorf("took %v of CPU (%v wall), limit 5 s", cpu, took)
			}
			fmt.Fprintf(&table, "| %s | %s | %d | %d | %.2f | %.2f | %d | %d |\n", tc.name, strings.Join(tc.args, " "), st.Size(), tc.ops, cpu.Seconds(), took.Seconds(), rss>>20, limit>>20)
		})
	}
	t.Logf("\n| case | command | bytes | ops | CPU s | wall s | peak RSS MiB | limit MiB |\n|---|---|---|---|---|---|---|---|\n%s", table.String())
}
