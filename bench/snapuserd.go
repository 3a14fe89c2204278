package main

// snapuserd section: read throughput through the daemon's read path for an
// lz4 v3 COW (64 KiB units), via the emulated dm-user transport (before and
// with a merge in progress) and via the FUSE export (the kernel's and a
// 1 MiB read-ahead), each beside a direct read of the target image in the
// same run, cold and warm, with the process CPU time per read; and the
// memory a handler costs for a 1 GiB partition.

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/kernel/fuse"
	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/merge"
	"github.com/vabc-go/vabc/snapuserd/proto"
)

func init() { register("snapuserd", benchSnapuserd) }

const (
	suPartition = 1 << 30 // bytes
	suSeqBytes  = 256 << 20
	suRandReads = 20000
)

// suImages writes base (= source, as in Virtual A/B), target and an lz4 v3
// COW: 30 % of the blocks replaced, 10 % copied from elsewhere, 5 % zero,
// the rest unchanged.
func suImages(dir string) (base, target, cowPath string, err error) {
	const bs = 4096
	n := suPartition / bs
	r := rand.New(rand.NewPCG(42, 7))
	base, target, cowPath = filepath.Join(dir, "base.img"), filepath.Join(dir, "target.img"), filepath.Join(dir, "system.cow")
	bf, err := os.Create(base)
	if err != nil {
		return
	}
	defer bf.Close()
	tf, err := os.Create(target)
	if err != nil {
		return
	}
	defer tf.Close()
	cf, err := os.Create(cowPath)
	if err != nil {
		return
	}
	defer cf.Close()
	w, err := cow.NewWriterV3(cf, cow.WriterOptions{Compression: cow.CompressionLz4, CompressionFactor: 64 << 10, MaxBlocks: uint64(n)})
	if err != nil {
		return
	}
	fill := func(b []byte) {
		words := []string{"system ", "framework ", "0123456789", "\x00\x00\x00\x00\x00\x00"}
		for i := 0; i < len(b); {
			if r.IntN(3) == 0 {
				b[i] = byte(r.Uint32())
				i++
				continue
			}
			i += copy(b[i:], words[r.IntN(len(words))])
		}
	}
	// Base first (copies need their sources).
	const chunk = 256
	buf := make([]byte, chunk*bs)
	for b := 0; b < n; b += chunk {
		fill(buf)
		if _, err = bf.WriteAt(buf, int64(b)*bs); err != nil {
			return
		}
	}
	// Plan the runs, then pick every copy's source among blocks that no copy
	// writes, and emit the copies first: the COW then merges in place as
	// update_engine's would (ordered ops before Replace/Zero, no copy
	// reading a block an earlier copy wrote).
	type run struct {
		blk, l, src int
		kind        int // 0 unchanged, 1 replace, 2 copy, 3 zero
	}
	var runs []run
	copyDest := make([]bool, n)
	for b := 0; b < n; b += chunk {
		for at := 0; at < chunk; {
			l := min(1+r.IntN(32), chunk-at)
			ru := run{blk: b + at, l: l}
			switch k := r.IntN(100); {
			case k < 30:
				ru.kind = 1
			case k < 40:
				ru.kind = 2
				for i := range l {
					copyDest[ru.blk+i] = true
				}
			case k < 45:
				ru.kind = 3
			}
			runs = append(runs, ru)
			at += l
		}
	}
	for i := range runs {
		if runs[i].kind != 2 {
			continue
		}
	pick:
		for {
			src := r.IntN(n - runs[i].l)
			for j := range runs[i].l {
				if copyDest[src+j] {
					continue pick
				}
			}
			runs[i].src = src
			break
		}
		if err = w.AddCopy(uint64(runs[i].blk), uint64(runs[i].src), uint64(runs[i].l)); err != nil {
			return
		}
	}
	tb := make([]byte, chunk*bs)
	ri := 0
	for b := 0; b < n; b += chunk {
		if _, err = bf.ReadAt(tb, int64(b)*bs); err != nil {
			return
		}
		for ; ri < len(runs) && runs[ri].blk < b+chunk; ri++ {
			ru := runs[ri]
			seg := tb[(ru.blk-b)*bs : (ru.blk-b+ru.l)*bs]
			switch ru.kind {
			case 1:
				fill(seg)
				err = w.AddRawBlocks(uint64(ru.blk), seg)
			case 2:
				_, err = bf.ReadAt(seg, int64(ru.src)*bs)
			case 3:
				clear(seg)
				err = w.AddZeroBlocks(uint64(ru.blk), uint64(ru.l))
			}
			if err != nil {
				return
			}
		}
		if _, err = tf.WriteAt(tb, int64(b)*bs); err != nil {
			return
		}
	}
	if err = w.Finalize(); err != nil {
		return
	}
	err = w.Close()
	return
}

type readerAt interface {
	ReadAt(p []byte, off int64) (int, error)
}

// suPasses are the four read passes of one path, in MB/s: sequential 4 KiB
// reads over the first suSeqBytes and suRandReads random aligned 4 KiB
// reads, each first cold (the path's caches dropped: every block is
// produced by the daemon) and then warm (the same reads again).
type suPasses struct {
	seqCold, seqWarm, rndCold, rndWarm float64
	cpu                                time.Duration    // process CPU time of all four passes
	passCPU                            [4]time.Duration // per pass, in the order above
}

// suMeasure runs the four passes on ra, checking the bytes against want.
// drop, if non-nil, drops ra's page cache before each cold pass.
func suMeasure(ra readerAt, want *os.File, drop func()) (res suPasses, err error) {
	p, q := make([]byte, 4096), make([]byte, 4096)
	cpu0 := cpuTime()
	seq := func() (float64, error) {
		start := time.Now()
		for off := int64(0); off < suSeqBytes; off += 4096 {
			if _, err := ra.ReadAt(p, off); err != nil {
				return 0, err
			}
		}
		return suSeqBytes / time.Since(start).Seconds() / 1e6, nil
	}
	rnd := func() (float64, error) {
		r := rand.New(rand.NewPCG(1, 1))
		start := time.Now()
		var check time.Duration
		for i := range suRandReads {
			off := r.Int64N(suPartition/4096) * 4096
			if _, err := ra.ReadAt(p, off); err != nil {
				return 0, err
			}
			if i%16 == 0 { // spot-check correctness (excluded from the timing)
				c := time.Now()
				if _, err := want.ReadAt(q, off); err != nil {
					return 0, err
				}
				if !bytes.Equal(p, q) {
					return 0, fmt.Errorf("data mismatch at offset %d", off)
				}
				check += time.Since(c)
			}
		}
		return float64(suRandReads*4096) / (time.Since(start) - check).Seconds() / 1e6, nil
	}
	for i, pass := range []struct {
		run  func() (float64, error)
		cold bool
		out  *float64
	}{{seq, true, &res.seqCold}, {seq, false, &res.seqWarm}, {rnd, true, &res.rndCold}, {rnd, false, &res.rndWarm}} {
		if pass.cold && drop != nil {
			drop()
		}
		c := cpuTime()
		if *pass.out, err = pass.run(); err != nil {
			return
		}
		res.passCPU[i] = cpuTime() - c
	}
	res.cpu = cpuTime() - cpu0
	return
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// row prints one path's passes with their ratios to the direct reads.
func (res suPasses) row(rep *report, name string, ref suPasses) {
	suRows = append(suRows, suRow{name, res})
	rep.printf("| %s | %.0f (%.3f) | %.0f (%.3f) | %.0f (%.3f) | %.0f (%.3f) | %.2f |\n", name,
		res.seqCold, res.seqCold/ref.seqCold, res.seqWarm, res.seqWarm/ref.seqWarm,
		res.rndCold, res.rndCold/ref.rndCold, res.rndWarm, res.rndWarm/ref.rndWarm, res.cpu.Seconds())
}

type suRow struct {
	name string
	res  suPasses
}

// suRows collects the table's rows for the CPU table under it.
var suRows []suRow

// cpuTable prints the process CPU time per read of every pass beside the
// direct reads': on a loaded machine, where the throughput columns mostly
// measure the scheduler, these still compare the work done.
func cpuTable(rep *report, ref suPasses) {
	per := func(res suPasses, i int) float64 {
		n := suRandReads
		if i < 2 {
			n = suSeqBytes / 4096
		}
		return float64(res.passCPU[i].Microseconds()) / float64(n)
	}
	rep.printf("\nProcess CPU µs per 4 KiB read (÷ direct):\n\n| path | seq cold | seq warm | random cold | random warm |\n|---|---|---|---|---|\n")
	for _, r := range suRows {
		rep.printf("| %s |", r.name)
		for i := range 4 {
			rep.printf(" %.2f (%.1f) |", per(r.res, i), per(r.res, i)/max(per(ref, i), 1e-9))
		}
		rep.printf("\n")
	}
}

// dropCache drops f's page cache (POSIX_FADV_DONTNEED; FUSE files too).
func dropCache(f *os.File) func() {
	return func() { unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED) }
}

func rssKiB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

func benchSnapuserd(rep *report) error {
	dir, err := os.MkdirTemp("", "vabc-bench-snapuserd")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(os.Stderr, "snapuserd: generating a 1 GiB partition and its lz4 v3 COW…")
	base, target, cowPath, err := suImages(dir)
	if err != nil {
		return err
	}
	fi, _ := os.Stat(cowPath)
	tf, err := os.Open(target)
	if err != nil {
		return err
	}
	defer tf.Close()

	debug.FreeOSMemory() // return the generator's buffers so RSS deltas mean something
	rss0 := rssKiB()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	fe := &snapuserd.EmulatedDmUser{Workers: 4}
	m := snapuserd.NewManager(snapuserd.Config{Frontend: fe, Open: func(req proto.InitRequest) (snapuserd.Device, error) {
		return snapuserd.OpenSnapshot(req, nil)
	}, StopCancels: true})
	defer m.Shutdown()
	if _, err := m.InitHandler(proto.InitRequest{Misc: "system", Cow: cowPath, Backing: base, BasePath: base}); err != nil {
		return err
	}
	if err := m.StartHandler("system"); err != nil {
		return err
	}
	debug.FreeOSMemory()
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	rss1 := rssKiB()

	rep.printf("\n## snapuserd read path\n\n1 GiB partition, v3 COW, lz4, 64 KiB compression units (%.1f MiB; 30 %% replaced, 10 %% copied, 5 %% zero, rest unmapped). "+
		"Sequential: 4 KiB reads over the first %d MiB; random: %d aligned 4 KiB reads over the whole device, spot-checked against the target. "+
		"Each is run cold (the path's page cache dropped first, so the daemon produces every block) and then warm (the same reads again). "+
		"The reference reads target.img directly, its page cache warm after generation in both passes; every ratio (in brackets) is to the same pass of the direct reads. "+
		"CPU-s is the whole process (reader, daemon and kernel time on its behalf) over the four passes.\n\n", float64(fi.Size())/(1<<20), suSeqBytes>>20, suRandReads)
	rep.printf("| path | seq cold MB/s (÷ direct) | seq warm | random cold | random warm | CPU-s |\n|---|---|---|---|---|---|\n")
	suRows = nil
	ref, err := suMeasure(tf, tf, nil)
	if err != nil {
		return err
	}
	ref.row(rep, "target.img direct (pread)", ref)
	emu, err := suMeasure(fe.Target("system"), tf, nil)
	if err != nil {
		return fmt.Errorf("emulated dm-user: %w", err)
	}
	emu.row(rep, "snapuserd, emulated dm-user (4 workers)", ref)

	if os.Geteuid() == 0 {
		if _, err := os.Stat("/dev/fuse"); err == nil {
			for _, ra := range []int{-1, 0} {
				if err := suFuse(rep, dir, cowPath, base, tf, ra, ref); err != nil {
					return fmt.Errorf("fuse: %w", err)
				}
			}
		}
	} else {
		rep.printf("| snapuserd, FUSE file | skipped: needs root | | | | |\n")
	}
	// Last, as the merge writes base.img: the emulated path again with a
	// merge in progress (initiated, paused after its first commits), so
	// that reads go through the merge engine's read path.
	if err := m.InitiateMerge("system"); err != nil {
		return fmt.Errorf("initiate_merge: %w", err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		pr, _ := m.MergeProgress("system")
		if pr.NumMergeOps > 0 || pr.Phase == merge.PhaseComplete || pr.Phase == merge.PhaseFailed {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("merge made no progress in 2 minutes")
		}
		time.Sleep(time.Millisecond)
	}
	m.PauseMerge()
	pr, _ := m.MergeProgress("system")
	for !pr.Parked && pr.Phase != merge.PhaseComplete && pr.Phase != merge.PhaseFailed && time.Now().Before(deadline) {
		// Wait for the merge to park, so that its own work is not in
		// the passes' CPU time.
		time.Sleep(time.Millisecond)
		pr, _ = m.MergeProgress("system")
	}
	if pr.Phase == merge.PhaseFailed {
		return fmt.Errorf("merge failed: %v", pr.Err)
	}
	during, err := suMeasure(fe.Target("system"), tf, nil)
	if err != nil {
		return fmt.Errorf("emulated dm-user during the merge: %w", err)
	}
	during.row(rep, fmt.Sprintf("snapuserd, emulated dm-user (4 workers), merge in progress (parked at %.1f %%, %s)", pr.Percent, pr.Status), ref)
	m.ResumeMerge()
	rep.printf("\nMerge in progress ÷ before it, same path, throughput: seq %.3f / %.3f, random %.3f / %.3f (cold / warm); "+
		"process CPU-s per pass before → during: seq %.2f → %.2f / %.2f → %.2f, random %.2f → %.2f / %.2f → %.2f.\n",
		during.seqCold/emu.seqCold, during.seqWarm/emu.seqWarm, during.rndCold/emu.rndCold, during.rndWarm/emu.rndWarm,
		emu.passCPU[0].Seconds(), during.passCPU[0].Seconds(), emu.passCPU[1].Seconds(), during.passCPU[1].Seconds(),
		emu.passCPU[2].Seconds(), during.passCPU[2].Seconds(), emu.passCPU[3].Seconds(), during.passCPU[3].Seconds())

	cpuTable(rep, ref)
	rep.printf("\nHandler memory for the 1 GiB partition (%d ops): RSS +%.1f MiB, Go heap in use +%.1f MiB after init+start.\n",
		len(mustOps(cowPath)), float64(rss1-rss0)/1024, float64(int64(ms1.HeapInuse)-int64(ms0.HeapInuse))/(1<<20))
	return nil
}

// suFuse measures the FUSE export with the kernel read-ahead readAheadKB
// (fuse.Options.ReadAheadKB).
func suFuse(rep *report, dir, cowPath, base string, tf *os.File, readAheadKB int, ref suPasses) error {
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	exp, err := fuse.Mount(mnt, &fuse.Options{ReadAheadKB: readAheadKB})
	if err != nil {
		return err
	}
	defer exp.Unmount()
	fm := snapuserd.NewManager(snapuserd.Config{Frontend: &snapuserd.Fuse{Export: exp}, Open: func(req proto.InitRequest) (snapuserd.Device, error) {
		return snapuserd.OpenSnapshot(req, nil)
	}, StopCancels: true})
	defer fm.Shutdown()
	if _, err := fm.InitHandler(proto.InitRequest{Misc: "system", Cow: cowPath, Backing: base, BasePath: base}); err != nil {
		return err
	}
	if err := fm.StartHandler("system"); err != nil {
		return err
	}
	ff, err := os.Open(filepath.Join(mnt, "system"))
	if err != nil {
		return err
	}
	defer ff.Close()
	res, err := suMeasure(ff, tf, dropCache(ff))
	if err != nil {
		return err
	}
	res.row(rep, fmt.Sprintf("snapuserd, FUSE file (1 MiB max_read, kernel read-ahead %d KiB, KEEP_CACHE)", exp.ReadAheadKB()), ref)
	return nil
}

func mustOps(path string) []cow.Op {
	r, err := cow.Open(path, nil)
	if err != nil {
		return nil
	}
	defer r.Close()
	return r.Ops()
}
