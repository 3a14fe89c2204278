package main

// The "codecs" section: compress and decompress throughput and ratio of
// every COW codec (cow.NewCompressor / cow.Decompress) on 4 KiB units (v2,
// v3 factor 4K) and 64 KiB units (v3 factor 64K, the AOSP build default),
// on a corpus of the machine's own ELF files, beside the matching CLI tool
// run on the same bytes as the reference.

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/cow"
)

func init() { register("codecs", runCodecs) }

const (
	corpusLimit     = 32 << 20
	compressBudget  = 2 * time.Second // per codec and unit size
	decompressBudge = 1 * time.Second
)

// cliRef is the command-line reference for a codec.
type cliRef struct {
	name        string
	compress    []string
	decompress  []string
	description string
}

var codecRefs = map[cow.Compression]cliRef{
	cow.CompressionGz:     {"gzip", []string{"-9", "-c"}, []string{"-d", "-c"}, "gzip -9"},
	cow.CompressionBrotli: {"brotli", []string{"-q", "11", "-c"}, []string{"-d", "-c"}, "brotli -q 11"},
	cow.CompressionLz4:    {"lz4", []string{"-1", "-c"}, []string{"-d", "-c"}, "lz4 -1"},
	cow.CompressionZstd:   {"zstd", []string{"-3", "-T1", "-c", "-q"}, []string{"-d", "-c", "-q"}, "zstd -3"},
	cow.CompressionXz:     {"xz", []string{"-6", "-T1", "-c"}, []string{"-d", "-c"}, "xz -6"},
}

// loadELFCorpus concatenates ELF files from /usr/bin and /usr/lib (in
// lexical order) up to limit bytes.
func loadELFCorpus(limit int) ([]byte, int, error) {
	var out []byte
	files := 0
	errFull := errors.New("full")
	for _, root := range []string{"/usr/bin", "/usr/lib"} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil || len(b) < 4 || !bytes.Equal(b[:4], []byte("\x7fELF")) {
				return nil
			}
			out = append(out, b[:min(len(b), limit-len(out))]...)
			files++
			if len(out) >= limit {
				return errFull
			}
			return nil
		})
		if errors.Is(err, errFull) {
			break
		}
	}
	if len(out) < 1<<20 {
		return nil, 0, fmt.Errorf("only %d bytes of ELF files found under /usr/bin and /usr/lib", len(out))
	}
	return out, files, nil
}

type codecResult struct {
	in, out      int64 // bytes in, compressed bytes out
	compSecs     float64
	decIn        int64 // decoded bytes during decompress timing
	decSecs      float64
	units        int
	rawFallbacks int // units whose compressed form is not smaller (stored raw in a COW)
}

// threadCPU returns the CPU time consumed by the calling OS thread. The
// machine may be shared, so throughput is computed per CPU-second of the
// measuring thread (and of the CLI process), not per wall-clock second.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measureCodec compresses unit-sized pieces of corpus until the budget is
// spent, then decompresses the results for at most decompressBudge.
func measureCodec(alg cow.Compression, unit int, corpus []byte) (codecResult, error) {
	var r codecResult
	c, err := cow.NewCompressor(alg, cow.DefaultLevel(alg), unit)
	if err != nil {
		return r, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var encs [][]byte
	start, cpu0 := time.Now(), threadCPU()
	for off := 0; off+unit <= len(corpus); off += unit {
		enc, err := c.Compress(nil, corpus[off:off+unit])
		if err != nil {
			return r, err
		}
		encs = append(encs, enc)
		r.in += int64(unit)
		r.out += int64(len(enc))
		if len(enc) >= unit {
			r.rawFallbacks++
		}
		if time.Since(start) > compressBudget && len(encs) >= 16 {
			break
		}
	}
	r.compSecs = (threadCPU() - cpu0).Seconds()
	r.units = len(encs)

	dst := make([]byte, unit)
	// One verified pass over everything first (not timed separately).
	for i, enc := range encs {
		if _, err := cow.Decompress(alg, dst, enc); err != nil {
			return r, fmt.Errorf("unit %d: %w", i, err)
		}
		if !bytes.Equal(dst, corpus[i*unit:(i+1)*unit]) {
			return r, fmt.Errorf("unit %d: round trip mismatch", i)
		}
	}
	start, cpu0 = time.Now(), threadCPU()
	for pass := 0; ; pass++ {
		for _, enc := range encs {
			if _, err := cow.Decompress(alg, dst, enc); err != nil {
				return r, err
			}
			r.decIn += int64(unit)
		}
		if time.Since(start) > decompressBudge {
			break
		}
	}
	r.decSecs = (threadCPU() - cpu0).Seconds()
	return r, nil
}

type cliResult struct {
	in, out           int64
	compSecs, decSecs float64
}

// runCLI times the reference tool on sample (compress, then decompress its
// own output and check the bytes).
func runCLI(ref cliRef, sample []byte) (cliResult, error) {
	var r cliResult
	if _, err := exec.LookPath(ref.name); err != nil {
		return r, fmt.Errorf("%s not installed", ref.name)
	}
	var out bytes.Buffer
	cmd := exec.Command(ref.name, ref.compress...)
	cmd.Stdin = bytes.NewReader(sample)
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return r, fmt.Errorf("%s: %v", ref.description, err)
	}
	r.compSecs = procCPU(cmd)
	r.in, r.out = int64(len(sample)), int64(out.Len())
	var back bytes.Buffer
	cmd = exec.Command(ref.name, ref.decompress...)
	cmd.Stdin = bytes.NewReader(out.Bytes())
	cmd.Stdout = &back
	if err := cmd.Run(); err != nil {
		return r, fmt.Errorf("%s -d: %v", ref.name, err)
	}
	r.decSecs = procCPU(cmd)
	if !bytes.Equal(back.Bytes(), sample) {
		return r, fmt.Errorf("%s round trip mismatch", ref.name)
	}
	return r, nil
}

// procCPU is the user+system CPU time of a finished command.
func procCPU(cmd *exec.Cmd) float64 {
	return (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
}

func mbps(n int64, secs float64) string {
	if secs <= 0 {
		return "—"
	}
	v := float64(n) / secs / 1e6
	if v < 10 {
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func runCodecs(rep *report) error {
	corpus, files, err := loadELFCorpus(corpusLimit)
	if err != nil {
		return err
	}
	rep.printf("## Codecs\n\n")
	rep.printf("Corpus: first %.1f MiB of %d ELF files from /usr/bin and /usr/lib. Each Go row compresses "+
		"independent units (as the COW writers do) at the writer's default level for up to %v, then decodes them "+
		"with `cow.Decompress` for up to %v (single goroutine). MB/s are per CPU-second of the measuring thread "+
		"(CLI: user+system time of the process), so they stay meaningful on a shared machine. Ratio = compressed / original (lower is better); "+
		"\"raw\" = units whose compressed form is not smaller (a COW stores those raw, except v2 gz/brotli). "+
		"The CLI reference compresses the same bytes the 64 KiB row sampled as one stream (large window, "+
		"process start-up included), so its ratio is the bound a per-unit codec cannot reach.\n\n",
		float64(len(corpus))/(1<<20), files, compressBudget, decompressBudge)
	rep.printf("| codec | unit | sampled MiB | compress MB/s | decompress MB/s | ratio | raw units | CLI reference | CLI compress MB/s | CLI decompress MB/s | CLI ratio |\n")
	rep.printf("|---|---|---|---|---|---|---|---|---|---|---|\n")
	var bars []bar
	for _, alg := range []cow.Compression{
		cow.CompressionNone, cow.CompressionGz, cow.CompressionBrotli, cow.CompressionLz4,
		cow.CompressionZstd, cow.CompressionSnappy, cow.CompressionXz,
	} {
		name := alg.String()
		if !alg.IsStandard() {
			name += " (ext)"
		}
		var sampled int64
		results := map[int]codecResult{}
		for _, unit := range []int{4 << 10, 64 << 10} {
			r, err := measureCodec(alg, unit, corpus)
			if err != nil {
				return fmt.Errorf("%v %d: %w", alg, unit, err)
			}
			results[unit] = r
			if unit == 64<<10 {
				sampled = r.in
			}
		}
		cliCols := "— | — | — | —"
		if ref, ok := codecRefs[alg]; ok {
			cr, err := runCLI(ref, corpus[:sampled])
			if err != nil {
				cliCols = fmt.Sprintf("%s: skipped (%v) | — | — | —", ref.description, err)
			} else {
				cliCols = fmt.Sprintf("`%s` | %s | %s | %.3f", ref.description,
					mbps(cr.in, cr.compSecs), mbps(cr.in, cr.decSecs), float64(cr.out)/float64(cr.in))
			}
		} else if alg == cow.CompressionNone {
			cliCols = "(memcpy) | — | — | —"
		} else {
			cliCols = "no CLI installed | — | — | —"
		}
		for i, unit := range []int{4 << 10, 64 << 10} {
			r := results[unit]
			if r.decSecs > 0 && alg != cow.CompressionNone { // none is a memcpy, off the scale
				bars = append(bars, bar{fmt.Sprintf("%s %d KiB", name, unit>>10), float64(r.decIn) / 1e6 / r.decSecs, i})
			}
			rep.printf("| %s | %d KiB | %.1f | %s | %s | %.3f | %d/%d | %s |\n", name, unit>>10,
				float64(r.in)/(1<<20), mbps(r.in, r.compSecs), mbps(r.decIn, r.decSecs),
				float64(r.out)/float64(r.in), r.rawFallbacks, r.units, cliCols)
		}
	}
	rep.plot("codecs-decompress", "decompression throughput per codec and compression unit", func(path string) error {
		return barChart(path, "COW read path: decompress MB/s per CPU-second, by codec and unit (none = memcpy, left out)", "MB/S", bars,
			[]string{"4 KiB units (compression factor 4K)", "64 KiB units (compression factor 64K)"})
	})
	return nil
}
