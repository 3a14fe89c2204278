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
// chunks, xz -6 --check=none as AOSP's generator writes them) with 2
// threads, beside `xz -dc -T2` of the same blobs (concatenated streams) as
// the decode limit, measured in the same run.
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

// buildBenchPayload writes (or reuses) the payload and the concatenated xz
// streams of its blobs.
func buildBenchPayload(dir string) (payloadPath, xzPath string, err error) {
	payloadPath, xzPath = filepath.Join(dir, "bench-payload.bin"), filepath.Join(dir, "bench-blobs.xz")
	if _, err1 := os.Stat(payloadPath); err1 == nil {
		if _, err2 := os.Stat(xzPath); err2 == nil {
			return payloadPath, xzPath, nil
		}
	}
	if _, err := exec.LookPath("xz"); err != nil {
		return "", "", fmt.Errorf("xz CLI needed to build the bench payload: %w", err)
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
	fmt.Fprintf(os.Stderr, "payload-extract: compressing %d × 2 MiB chunks with xz -6 (cached in %s)\n", n, dir)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c := exec.Command("xz", "-c", "-6", "-T1", "--check=none")
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
		b.AddOp("system", &metadata.InstallOperation{Type: metadata.InstallOperation_REPLACE_XZ.Enum(),
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

func benchPayloadExtract(r *report) error {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "vabc-bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	pp, xp, err := buildBenchPayload(dir)
	if err != nil {
		return err
	}
	p, err := payload.Open(pp)
	if err != nil {
		return err
	}
	defer p.Close()
	out, err := os.MkdirTemp("", "vabc-bench-extract-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(out)
	mib := float64(benchPayloadSize) / (1 << 20)

	type m struct{ wall, cpu time.Duration }
	xzRun := func(threads string) (m, error) {
		start := time.Now()
		c := exec.Command("xz", "-dc", threads, xp)
		c.Stdout = io.Discard
		if err := c.Run(); err != nil {
			return m{}, fmt.Errorf("xz -dc %s: %w", threads, err)
		}
		return m{time.Since(start), c.ProcessState.UserTime() + c.ProcessState.SystemTime()}, nil
	}
	extract := func(threads int) (m, error) {
		c0 := selfCPU()
		start := time.Now()
		res, err := apply.Extract(context.Background(), p, apply.Options{OutDir: out, Threads: threads})
		d := time.Since(start)
		if err == nil && !res[0].Verified {
			err = fmt.Errorf("image hash not verified")
		}
		return m{d, selfCPU() - c0}, err
	}
	// Interleave the runs so that load changes on a shared machine hit
	// both sides alike.
	xz2, err := xzRun("-T2")
	if err != nil {
		return err
	}
	ours2, err := extract(2)
	if err != nil {
		return err
	}
	xz1, err := xzRun("-T1")
	if err != nil {
		return err
	}
	ours1, err := extract(1)
	if err != nil {
		return err
	}
	// payload-dumper-go, the community extractor, when it is installed.
	var pdg *m
	pdgNote := "`payload-dumper-go` is not installed (it is not in Debian): no row for it."
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
		"(xz -6, check none), payload %.1f MiB. `payload extract` writes the image to disk and verifies its SHA-256 "+
		"(both included in its time); xz decodes the same concatenated blobs to /dev/null. CPU seconds are "+
		"user+system (rusage); they stay meaningful when the machine is shared, wall seconds do not.\n\n",
		benchPayloadSize>>20, benchPayloadSize/benchChunk, float64(st.Size())/(1<<20))
	r.printf("| what | threads | wall s | MiB/s (uncompressed) | vs xz -dc -T2 (wall) | CPU s | MiB per CPU-s |\n|---|---|---|---|---|---|---|\n")
	row := func(name string, th int, d m) {
		r.printf("| %s | %d | %.2f | %.1f | %.2f× | %.2f | %.1f |\n", name, th, d.wall.Seconds(), mib/d.wall.Seconds(),
			xz2.wall.Seconds()/d.wall.Seconds(), d.cpu.Seconds(), mib/d.cpu.Seconds())
	}
	row("`payload extract` (vabc)", 2, ours2)
	row("`xz -dc -T2` (liblzma, reference)", 2, xz2)
	row("`payload extract` (vabc)", 1, ours1)
	row("`xz -dc -T1` (liblzma)", 1, xz1)
	if pdg != nil {
		row("`payload-dumper-go -c 2`", 2, *pdg)
	} else {
		r.printf("\n%s\n", pdgNote)
	}
	var bars []bar
	for _, x := range []struct {
		name string
		d    m
	}{{"payload extract, 2 threads", ours2}, {"xz -dc -T2", xz2}, {"payload extract, 1 thread", ours1}, {"xz -dc -T1", xz1}, {"payload-dumper-go -c 2", m{}}} {
		if x.d.wall == 0 {
			if pdg == nil {
				continue
			}
			x.d = *pdg
		}
		bars = append(bars, bar{x.name + " (wall)", mib / x.d.wall.Seconds(), 0}, bar{x.name + " (CPU)", mib / x.d.cpu.Seconds(), 1})
	}
	r.plot("payload-extract", "payload extract against xz -dc", func(path string) error {
		return barChart(path, fmt.Sprintf("full payload, %d MiB of REPLACE_XZ: MiB/s of image", benchPayloadSize>>20), "MIB/S", bars,
			[]string{"per wall-clock second", "per CPU-second (user+system)"})
	})
	return nil
}
