package main

// The "merge" section: snapuserd's crash-safe merge (snapuserd/merge) of a
// 256 MiB partition, in MB of target written durably per second, beside
// `cp` + `sync` of the same number of bytes in the same run.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/faultfs"
	"github.com/vabc-go/vabc/snapuserd/merge"
)

func init() { register("merge", benchMerge) }

const (
	mergeBenchSize = 256 << 20
	mergeBenchBS   = cow.DefaultBlockSize
)

type mergeScenario struct {
	name    string
	version int
	comp    cow.Compression
	factor  uint32
	// incremental: overlapping shift-by-k copies (some XOR) over the first
	// 60%, Replace over half the rest; otherwise every block is replaced.
	incremental bool
}

func benchMerge(r *report) error {
	dir, err := os.MkdirTemp("", "vabc-bench-merge")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	r.printf("\n## merge (snapuserd/merge)\n\n")
	r.printf("%d MiB partition, merged in place by `merge.MergeFiles` on files in %s: read-ahead windows of 510 ops "+
		"(the next window's sources read and XORed while the current one is written and synced); a window that overwrites "+
		"its own sources is first persisted in the COW scratch region (data, fdatasync, read_ahead_state 2, fdatasync), then "+
		"every window is written to base, fdatasync, num_merge_ops committed, fdatasync; Replace/Zero runs of ≤ 1 MiB commit "+
		"every 8 MiB. Medians of three runs. Each scenario is merged from the same files twice per run: synchronous "+
		"pread/pwrite/fdatasync, then `Options.IOUring` (source reads as io_uring READs, depth 8, on the read-ahead's ring; "+
		"window writes as linked io_uring WRITEs + drained FSYNC, depth 8; Replace runs stay synchronous). "+
		"Reference: `cp` of a file with the same number of bytes followed by `sync` of the copy, same run, same file system. "+
		"The merge overwrites an existing, allocated file in place while `cp` allocates a new one, so a full-OTA merge "+
		"can beat the reference. The incremental scenario's Copy chains overwrite their own sources in every window, so "+
		"AOSP's protocol writes each of them twice (scratch, then base) with four barriers per 510-op window: the merge "+
		"writes 1.75× the bytes `cp` writes.\n\n", mergeBenchSize>>20, os.TempDir())
	r.printf("| scenario | merge writes | ops | target MB written | merge s | merge MB/s | cp+sync MB/s | merge ÷ cp+sync |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, sc := range []mergeScenario{
		{name: "full OTA: Replace only, v3 lz4 64 KiB", version: 3, comp: cow.CompressionLz4, factor: 64 << 10},
		{name: "incremental: overlapping Copy chains + XOR + Replace, v2 uncompressed", version: 2, incremental: true},
	} {
		if err := benchMergeScenario(r, dir, sc); err != nil {
			return fmt.Errorf("%s: %w", sc.name, err)
		}
	}
	return nil
}

func benchMergeScenario(r *report, dir string, sc mergeScenario) error {
	rng := rand.New(rand.NewPCG(42, uint64(sc.version)))
	fill := func(p []byte) {
		for i := 0; i+8 <= len(p); i += 8 {
			binary.LittleEndian.PutUint64(p[i:], rng.Uint64())
		}
	}
	nb := uint64(mergeBenchSize / mergeBenchBS)
	base := make([]byte, mergeBenchSize)
	fill(base)
	target := append([]byte(nil), base...)
	blk := func(p []byte, b uint64) []byte { return p[b*mergeBenchBS : (b+1)*mergeBenchBS] }

	cowPath := filepath.Join(dir, "merge.cow")
	f, err := faultfs.OpenFile(cowPath, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	opts := cow.WriterOptions{Compression: sc.comp, CompressionFactor: sc.factor, MaxBlocks: nb, Path: cowPath}
	var w cow.Writer
	if sc.version == 3 {
		w, err = cow.NewWriterV3(f, opts)
	} else {
		w, err = cow.NewWriterV2(f, opts)
	}
	if err != nil {
		return err
	}
	var written uint64
	replaceFrom := uint64(0)
	if sc.incremental {
		type ordered struct {
			dst, src uint64
			xor      []byte
		}
		var ops []ordered
		limit := nb * 6 / 10
		for pos := uint64(0); pos+600 < limit; {
			k := 1 + rng.Uint64N(8)
			n := 200 + rng.Uint64N(400)
			for b := pos; b < pos+n; b++ {
				op := ordered{dst: b, src: b + k}
				if rng.IntN(10) == 0 {
					op.xor = make([]byte, mergeBenchBS)
					fill(op.xor)
				}
				ops = append(ops, op)
			}
			pos += n + k + 1
		}
		seq := make([]uint32, len(ops))
		for i, op := range ops {
			seq[i] = uint32(op.dst)
		}
		if err := w.AddSequenceData(seq); err != nil {
			return err
		}
		for _, op := range ops {
			// Sources are intact when each op runs (ascending, src > dst).
			d := append([]byte(nil), blk(target, op.src)...)
			if op.xor != nil {
				for i := range d {
					d[i] ^= op.xor[i]
				}
				err = w.AddXorBlocks(op.dst, op.xor, op.src, 0)
			} else {
				err = w.AddCopy(op.dst, op.src, 1)
			}
			if err != nil {
				return err
			}
			copy(blk(target, op.dst), d)
		}
		written += uint64(len(ops)) * mergeBenchBS
		replaceFrom = limit
	}
	// Replace runs of 64 blocks, every other run skipped when incremental.
	run := make([]byte, 64*mergeBenchBS)
	for b := replaceFrom; b < nb; b += 64 {
		if sc.incremental && (b/64)%2 == 1 {
			continue
		}
		n := min(uint64(64), nb-b)
		p := run[:n*mergeBenchBS]
		fill(p)
		if err := w.AddRawBlocks(b, p); err != nil {
			return err
		}
		copy(target[b*mergeBenchBS:], p)
		written += n * mergeBenchBS
	}
	if err := w.Finalize(); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	cowImg, err := os.ReadFile(cowPath)
	if err != nil {
		return err
	}
	basePath := filepath.Join(dir, "base.img")
	var res [2]mergeResult
	nops := 0
	// Three runs per mode, alternating; the median counts.
	var durs [2][]time.Duration
	for rep := 0; rep < mergeBenchReps; rep++ {
		for mode, useURing := range []bool{false, true} {
			r0, n, err := mergeOnce(cowPath, basePath, cowImg, base, target, useURing)
			if err != nil {
				return err
			}
			nops = n
			durs[mode] = append(durs[mode], r0.dur)
			res[mode].uring, res[mode].reads, res[mode].reason = r0.uring, r0.reads, r0.reason
		}
	}
	for mode := range res {
		res[mode].dur = median(durs[mode])
	}
	if sc.incremental {
		defer func() {
			if err := mergeProgressPlot(r, cowPath, basePath, cowImg, base, target, res[0].dur); err != nil {
				r.printf("\n(merge progress plot: %v)\n", err)
			}
		}()
	} else {
		base = nil
	}

	// Reference: cp + sync of the same number of bytes.
	refPath, copyPath := filepath.Join(dir, "ref.img"), filepath.Join(dir, "ref-copy.img")
	if err := writeSynced(refPath, target[:written]); err != nil {
		return err
	}
	var cps []time.Duration
	for rep := 0; rep < mergeBenchReps; rep++ {
		os.Remove(copyPath)
		start := time.Now()
		if out, err := exec.Command("cp", refPath, copyPath).CombinedOutput(); err != nil {
			return fmt.Errorf("cp: %v: %s", err, out)
		}
		if out, err := exec.Command("sync", copyPath).CombinedOutput(); err != nil {
			return fmt.Errorf("sync: %v: %s", err, out)
		}
		cps = append(cps, time.Since(start))
	}
	cpDur := median(cps)
	os.Remove(refPath)
	os.Remove(copyPath)

	mb := float64(written) / 1e6
	cMBs := mb / cpDur.Seconds()
	for mode, r0 := range res {
		name := "sync I/O"
		if mode == 1 {
			name = fmt.Sprintf("io_uring (%d writes, %d reads)", r0.uring, r0.reads)
			if r0.reason != nil {
				name = fmt.Sprintf("io_uring unavailable, sync I/O (%v)", r0.reason)
			}
		}
		mMBs := mb / r0.dur.Seconds()
		r.printf("| %s | %s | %d | %.1f | %.2f | %.1f | %.1f | %.2f |\n", sc.name, name, nops, mb, r0.dur.Seconds(), mMBs, cMBs, mMBs/cMBs)
	}
	return nil
}

const mergeBenchReps = 3

type mergeResult struct {
	dur    time.Duration
	uring  int64 // io_uring writes
	reads  int64 // io_uring reads
	reason error
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// mergeOnce writes fresh COW and base files, merges them (timed: New + Run,
// durable) and checks the result against the target.
func mergeOnce(cowPath, basePath string, cowImg, base, target []byte, useURing bool) (mergeResult, int, error) {
	var res mergeResult
	if err := writeSynced(cowPath, cowImg); err != nil {
		return res, 0, err
	}
	if err := writeSynced(basePath, base); err != nil {
		return res, 0, err
	}
	rd, err := cow.Open(cowPath, nil)
	if err != nil {
		return res, 0, err
	}
	defer rd.Close()
	nops := len(rd.MergeOrder())
	cf, err := faultfs.Open(cowPath)
	if err != nil {
		return res, 0, err
	}
	defer cf.Close()
	bf, err := faultfs.Open(basePath)
	if err != nil {
		return res, 0, err
	}
	defer bf.Close()
	start := time.Now()
	e, err := merge.New(cf, bf, rd, &merge.Options{IOUring: useURing})
	if err == nil {
		err = e.Run(context.Background())
	}
	res.dur = time.Since(start)
	if err != nil {
		return res, 0, err
	}
	res.uring, res.reason = e.IOURing()
	res.reads = e.IOURingReads()
	got, err := os.ReadFile(basePath)
	if err != nil {
		return res, 0, err
	}
	if !bytes.Equal(got, target) {
		return res, 0, fmt.Errorf("merged base differs from the target (io_uring %v)", useURing)
	}
	return res, nops, nil
}

func writeSynced(path string, data []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// mergeProgressPlot merges the scenario's files again while sampling
// merge_percent (the durable num_merge_ops) every 2 ms: once uninterrupted,
// once stopped at 25, 50 and 75 % of the uninterrupted time (context
// cancelled, the engine dropped) and resumed each time by a new engine on
// the same files, as a restarted daemon resumes from the on-disk merge state.
// It plots both curves against wall time.
func mergeProgressPlot(r *report, cowPath, basePath string, cowImg, base, target []byte, full time.Duration) error {
	type sample = [2]float64
	runMerge := func(stops []time.Duration) ([]sample, []float64, error) {
		if err := writeSynced(cowPath, cowImg); err != nil {
			return nil, nil, err
		}
		if err := writeSynced(basePath, base); err != nil {
			return nil, nil, err
		}
		var pts []sample
		var marks []float64
		start := time.Now()
		ms := func() float64 { return float64(time.Since(start).Microseconds()) / 1000 }
		for round := 0; ; round++ {
			rd, err := cow.Open(cowPath, nil)
			if err != nil {
				return nil, nil, err
			}
			cf, err := faultfs.Open(cowPath)
			if err != nil {
				rd.Close()
				return nil, nil, err
			}
			bf, err := faultfs.Open(basePath)
			if err != nil {
				rd.Close()
				cf.Close()
				return nil, nil, err
			}
			e, err := merge.New(cf, bf, rd, nil)
			if err != nil {
				rd.Close()
				cf.Close()
				bf.Close()
				return nil, nil, err
			}
			ctx, cancel := context.WithCancel(context.Background())
			if round < len(stops) {
				time.AfterFunc(stops[round]-time.Since(start), cancel)
			}
			done := make(chan error, 1)
			go func() { done <- e.Run(ctx) }()
			var runErr error
			tick := time.NewTicker(2 * time.Millisecond)
		sampling:
			for {
				select {
				case runErr = <-done:
					break sampling
				case <-tick.C:
					pts = append(pts, sample{ms(), e.Progress().Percent})
				}
			}
			tick.Stop()
			pts = append(pts, sample{ms(), e.Progress().Percent})
			cancel()
			rd.Close()
			cf.Close()
			bf.Close()
			if runErr == nil {
				break
			}
			if ctx.Err() == nil {
				return nil, nil, runErr
			}
			marks = append(marks, ms())
		}
		got, err := os.ReadFile(basePath)
		if err != nil {
			return nil, nil, err
		}
		if !bytes.Equal(got, target) {
			return nil, nil, fmt.Errorf("merged base differs from the target after %d stops", len(marks))
		}
		return pts, marks, nil
	}
	plain, _, err := runMerge(nil)
	if err != nil {
		return err
	}
	var stops []time.Duration
	for _, f := range []float64{0.25, 0.5, 0.75} {
		stops = append(stops, time.Duration(float64(full)*f))
	}
	stopped, marks, err := runMerge(stops)
	if err != nil {
		return err
	}
	r.plot("merge-progress", "merge progress over time, uninterrupted and stopped three times", func(path string) error {
		return lineChart(path, "incremental merge: durable merge_percent over time", "MILLISECONDS", "MERGE %", 100, []series{
			{name: "uninterrupted", points: plain},
			{name: fmt.Sprintf("stopped %d times and resumed from the on-disk state (ticks)", len(marks)), points: stopped, marks: marks},
		})
	})
	return nil
}
