package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/vabc-go/vabc/update_engine/apply"
	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/payload"
	"github.com/vabc-go/vabc/update_engine/payload/payloadtest"
)

// payload-extract: full-payload extract throughput (REPLACE_XZ, 2 MiB
// chunks, xz -6 --check=none as AOSP's generator writes them) with 2 and 1
// threads, beside the liblzma stand-in for payload-dumper-go
// (liblzmaref.go) and `xz -dc` of the same blobs (concatenated streams) as
// the decode limit, all measured in the same run; then the same image as
// REPLACE_ZSTD ops beside `zstd -dc`.
func init() { register("payload-extract", benchPayloadExtract) }

const (
	benchPayloadSize = 256 << 20
	benchChunk       = 2 << 20
)

// benchData collects executables and libraries (realistic partition content)
// up to n bytes.
func benchData(n int) ([]byte, error) {
	var files []string
	for _, dir := range []string{"/usr/lib/x86_64-linux-gnu", "/usr/bin", "/usr/local/go"} {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if info, err := d.Info(); err == nil && info.Size() > 100<<10 {
					files = append(files, p)
				}
			}
			return nil
		})
	}
	sort.Strings(files)
	buf := make([]byte, 0, n)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		buf = append(buf, b[:min(len(b), n-len(buf))]...)
		if len(buf) == n {
			return buf, nil
		}
	}
	return nil, fmt.Errorf("only %d bytes of sample binaries found, need %d", len(buf), n)
}

// benchCodec is how the bench payload's blobs are made: the op type, the
// compressor command and the file names of the payload and of the
// concatenated blobs.
type benchCodec struct {
	name    string
	op      metadata.InstallOperation_Type
	cmd     []string
	payload string
	blobs   string
}

var (
	benchXZ = benchCodec{"xz -6", metadata.InstallOperation_REPLACE_XZ,
		[]string{"xz", "-c", "-6", "-T1", "--check=none"}, "bench-payload.bin", "bench-blobs.xz"}
	// REPLACE_ZSTD as `ota_from_target_files --enable_replace_zstd` emits
	// it; level 19 compresses these executables about as well as xz -6.
	benchZstd = benchCodec{"zstd -19", metadata.InstallOperation_REPLACE_ZSTD,
		[]string{"zstd", "-c", "-19", "-T1", "--no-check"}, "bench-payload-zstd.bin", "bench-blobs.zst"}
)

// buildBenchPayload writes (or reuses) the payload and the concatenated
// blobs (xz streams or zstd frames) of its ops.
func buildBenchPayload(dir string, codec benchCodec) (payloadPath, xzPath string, err error) {
	payloadPath, xzPath = filepath.Join(dir, codec.payload), filepath.Join(dir, codec.blobs)
	if _, err1 := os.Stat(payloadPath); err1 == nil {
		if _, err2 := os.Stat(xzPath); err2 == nil {
			return payloadPath, xzPath, nil
		}
	}
	if _, err := exec.LookPath(codec.cmd[0]); err != nil {
		return "", "", fmt.Errorf("%s CLI needed to build the bench payload: %w", codec.cmd[0], err)
	}
	data, err := benchData(benchPayloadSize)
	if err != nil {
		return "", "", err
	}
	n := benchPayloadSize / benchChunk
	blobs := make([][]byte, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	sem := make(chan struct{}, runtime.NumCPU())
	fmt.Fprintf(os.Stderr, "payload-extract: compressing %d × 2 MiB chunks with %s (cached in %s)\n", n, codec.name, dir)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c := exec.Command(codec.cmd[0], codec.cmd[1:]...)
			c.Stdin = bytes.NewReader(data[i*benchChunk : (i+1)*benchChunk])
			blobs[i], errs[i] = c.Output()
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != nil {
			return "", "", e
		}
	}
	b := payloadtest.New(4096, 0)
	for i, blob := range blobs {
		b.AddOp("system", &metadata.InstallOperation{Type: codec.op.Enum(),
			DstExtents: payloadtest.Ext(uint64(i*benchChunk/4096), benchChunk/4096)}, blob)
	}
	payloadtest.SetInfo(b.Partition("system"), data, nil)
	if err := os.WriteFile(payloadPath+".tmp", b.Build(), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(xzPath, bytes.Join(blobs, nil), 0o644); err != nil {
		return "", "", err
	}
	return payloadPath, xzPath, os.Rename(payloadPath+".tmp", payloadPath)
}

// selfCPU is the user+system CPU time of this process so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// m is one measured run: wall time and user+system CPU.
type m struct{ wall, cpu time.Duration }

// cliRun runs a decoder CLI over the concatenated blobs into /dev/null.
func cliRun(name string, args ...string) (m, error) {
	start := time.Now()
	c := exec.Command(name, args...)
	c.Stdout = io.Discard
	if err := c.Run(); err != nil {
		return m{}, fmt.Errorf("%s %v: %w", name, args, err)
	}
	return m{time.Since(start), c.ProcessState.UserTime() + c.ProcessState.SystemTime()}, nil
}

// extractRun runs `payload extract` (apply.Extract, in this process) of the
// payload at path into out.
func extractRun(path, out string, threads int) (m, error) {
	p, err := payload.Open(path)
	if err != nil {
		return m{}, err
	}
	defer p.Close()
	runtime.GC() // garbage of the previous run is not charged to this one
	c0 := selfCPU()
	start := time.Now()
	res, err := apply.Extract(context.Background(), p, apply.Options{OutDir: out, Threads: threads})
	d := time.Since(start)
	if err == nil && !res[0].Verified {
		err = fmt.Errorf("image hash not verified")
	}
	return m{d, selfCPU() - c0}, err
}

func benchPayloadExtract(r *report) error {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "vabc-bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	pp, xp, err := buildBenchPayload(dir, benchXZ)
	if err != nil {
		return err
	}
	out, err := os.MkdirTemp("", "vabc-bench-extract-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(out)
	mib := float64(benchPayloadSize) / (1 << 20)

	p, err := payload.Open(pp)
	if err != nil {
		return err
	}
	ref, refNote := liblzmaRef(out, p, filepath.Join(out, "liblzma-ref.img"))
	p.Close()

	// Interleave the runs so that load changes on a shared machine hit
	// both sides alike.
	var ours, stand, xz [3]m // by thread count
	for _, th := range []int{2, 1} {
		if ref != nil {
			if stand[th], err = ref(th); err != nil {
				return err
			}
			os.Remove(filepath.Join(out, "liblzma-ref.img"))
		}
		if ours[th], err = extractRun(pp, out, th); err != nil {
			return err
		}
		if xz[th], err = cliRun("xz", "-dc", fmt.Sprintf("-T%d", th), xp); err != nil {
			return err
		}
	}
	// payload-dumper-go, the community extractor, when it is installed.
	var pdg *m
	pdgNote := "`payload-dumper-go` is not installed (it is not in Debian, and its Go module cannot be fetched here): " +
		"the liblzma stand-in takes its place."
	if bin, err := exec.LookPath("payload-dumper-go"); err == nil {
		start := time.Now()
		c := exec.Command(bin, "-c", "2", "-o", filepath.Join(out, "payload-dumper-go"), pp)
		c.Stdout, c.Stderr = io.Discard, io.Discard
		if err := c.Run(); err != nil {
			pdgNote = fmt.Sprintf("`payload-dumper-go -c 2` failed: %v.", err)
		} else {
			pdg = &m{time.Since(start), c.ProcessState.UserTime() + c.ProcessState.SystemTime()}
			pdgNote = ""
		}
	}
	st, _ := os.Stat(pp)
	r.printf("\n## payload-extract\n\n")
	r.printf("Full payload: one %d MiB partition of Linux executables/libraries, %d REPLACE_XZ ops of 2 MiB "+
		"(xz -6, check none), payload %.1f MiB. `payload extract` checks every op's data_sha256_hash, writes the image "+
		"to disk, verifies its SHA-256 and fsyncs it (all included in its time). The **liblzma stand-in** for "+
		"payload-dumper-go (cgo liblzma) is a C program built with gcc against the system liblzma and OpenSSL's SHA-256 "+
		"doing the same work per op (read blob, check its hash, liblzma decode, one pwrite), then the image hash and "+
		"fsync; with 1 thread it is what payload-dumper-go does on a one-partition payload (one goroutine per "+
		"partition). xz decodes the same concatenated blobs to /dev/null (decode only). CPU seconds are user+system "+
		"(rusage); they stay meaningful when the machine is shared, wall seconds do not.\n\n",
		benchPayloadSize>>20, benchPayloadSize/benchChunk, float64(st.Size())/(1<<20))
	r.printf("| what | threads | wall s | MiB/s (uncompressed) | CPU s | MiB per CPU-s |\n|---|---|---|---|---|---|\n")
	row := func(name string, th int, d m) {
		r.printf("| %s | %d | %.2f | %.1f | %.2f | %.1f |\n", name, th, d.wall.Seconds(), mib/d.wall.Seconds(),
			d.cpu.Seconds(), mib/d.cpu.Seconds())
	}
	for _, th := range []int{2, 1} {
		row("`payload extract` (vabc)", th, ours[th])
		if ref != nil {
			row("liblzma stand-in for payload-dumper-go", th, stand[th])
		}
		row(fmt.Sprintf("`xz -dc -T%d` (liblzma, decode only)", th), th, xz[th])
	}
	if pdg != nil {
		row("`payload-dumper-go -c 2`", 1, *pdg)
	} else {
		r.printf("\n%s\n", pdgNote)
	}
	ratio := func(a, b time.Duration) float64 { return a.Seconds() / b.Seconds() }
	r.printf("\nIssue goals (payload-dumper-go = the liblzma stand-in):\n\n")
	if ref != nil {
		r.printf("- CPU-seconds, `payload extract` ÷ stand-in: **%.2f×** with 1 thread, **%.2f×** with 2 threads (goal ≤ 1.0×)\n",
			ratio(ours[1].cpu, stand[1].cpu), ratio(ours[2].cpu, stand[2].cpu))
		r.printf("- wall, 2-thread `payload extract` faster than the 1-thread stand-in (payload-dumper-go's one goroutine "+
			"per partition): **%.2f×** (goal ≥ 1.5×); than the 2-thread stand-in: %.2f×\n",
			ratio(stand[1].wall, ours[2].wall), ratio(stand[2].wall, ours[2].wall))
	} else {
		r.printf("- no stand-in: %s\n", refNote)
	}
	r.printf("- CPU-seconds, `payload extract` ÷ `xz -dc` (decode only): %.2f× with 1 thread, %.2f× with 2 threads\n",
		ratio(ours[1].cpu, xz[1].cpu), ratio(ours[2].cpu, xz[2].cpu))

	var bars []bar
	add := func(name string, d m) {
		bars = append(bars, bar{name + " (wall)", mib / d.wall.Seconds(), 0}, bar{name + " (CPU)", mib / d.cpu.Seconds(), 1})
	}
	for _, th := range []int{2, 1} {
		add(fmt.Sprintf("payload extract, %d thr", th), ours[th])
		if ref != nil {
			add(fmt.Sprintf("liblzma stand-in, %d thr", th), stand[th])
		}
		add(fmt.Sprintf("xz -dc -T%d", th), xz[th])
	}
	if pdg != nil {
		add("payload-dumper-go -c 2", *pdg)
	}
	r.plot("payload-extract", "payload extract against the liblzma stand-in and xz -dc", func(path string) error {
		return barChart(path, fmt.Sprintf("full payload, %d MiB of REPLACE_XZ: MiB/s of image", benchPayloadSize>>20), "MIB/S", bars,
			[]string{"per wall-clock second", "per CPU-second (user+system)"})
	})
	return benchPayloadExtractZstd(r, dir, out, mib)
}

// benchPayloadExtractZstd: the same image as REPLACE_ZSTD ops, beside
// `zstd -dc` of the concatenated frames.
func benchPayloadExtractZstd(r *report, dir, out string, mib float64) error {
	if _, err := exec.LookPath("zstd"); err != nil {
		r.printf("\nREPLACE_ZSTD: skipped, the zstd CLI is not installed.\n")
		return nil
	}
	pp, zp, err := buildBenchPayload(dir, benchZstd)
	if err != nil {
		return err
	}
	var ours [3]m
	var zs m
	for _, th := range []int{2, 1} {
		if ours[th], err = extractRun(pp, out, th); err != nil {
			return err
		}
		if th == 1 {
			if zs, err = cliRun("zstd", "-dc", "-T1", zp); err != nil {
				return err
			}
		}
	}
	st, _ := os.Stat(pp)
	r.printf("\nThe same image as %d REPLACE_ZSTD ops (zstd -19, no checksum; payload %.1f MiB), decoded by "+
		"klauspost/compress/zstd; `zstd -dc` (libzstd, decode only, single-threaded) of the concatenated frames as the "+
		"reference.\n\n", benchPayloadSize/benchChunk, float64(st.Size())/(1<<20))
	r.printf("| what | threads | wall s | MiB/s (uncompressed) | CPU s | MiB per CPU-s |\n|---|---|---|---|---|---|\n")
	row := func(name string, th int, d m) {
		r.printf("| %s | %d | %.2f | %.1f | %.2f | %.1f |\n", name, th, d.wall.Seconds(), mib/d.wall.Seconds(),
			d.cpu.Seconds(), mib/d.cpu.Seconds())
	}
	row("`payload extract` (vabc), REPLACE_ZSTD", 2, ours[2])
	row("`payload extract` (vabc), REPLACE_ZSTD", 1, ours[1])
	row("`zstd -dc` (libzstd, decode only)", 1, zs)
	r.printf("\nCPU-seconds, REPLACE_ZSTD `payload extract` (1 thread) ÷ `zstd -dc`: %.2f×; wall, 2 threads vs `zstd -dc`: %.2f× faster\n",
		ours[1].cpu.Seconds()/zs.cpu.Seconds(), zs.wall.Seconds()/ours[2].wall.Seconds())
	return nil
}
