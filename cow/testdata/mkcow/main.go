// Command mkcow regenerates the binary COW fixtures in cow/testdata and
// builds demo images (run from the repository root):
//
//	go run ./cow/testdata/mkcow [fixtures] [-dir cow/testdata]
//	go run ./cow/testdata/mkcow images [-mib 8] DIR          # DIR/source.img, DIR/target.img
//	go run ./cow/testdata/mkcow diff [flags] SOURCE TARGET OUT.cow
//	go run ./cow/testdata/mkcow merge SOURCE COW OUT.img
//
// cow's TestFixtures rebuilds every fixture in memory and compares it with
// the checked-in file byte for byte. images/diff/merge back scripts/demo.sh:
// diff writes a COW the way AOSP create_snapshot does (copies in a safe merge
// order, replaces, zeros, labels), merge applies it in place in merge order.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/cow/internal/cowdiff"
	"github.com/vabc-go/vabc/cow/internal/cowfixture"
)

func main() {
	args := os.Args[1:]
	cmd := "fixtures"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "fixtures":
		err = fixtures(args)
	case "images":
		err = images(args)
	case "diff":
		err = diff(args)
	case "merge":
		err = merge(args)
	default:
		err = fmt.Errorf("unknown command %q (fixtures, images, diff, merge)", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkcow:", err)
		os.Exit(1)
	}
}

func fixtures(args []string) error {
	fl := flag.NewFlagSet("fixtures", flag.ExitOnError)
	dir := fl.String("dir", "cow/testdata", "output directory")
	fl.Parse(args)
	for _, fx := range cowfixture.All() {
		b, err := fx.Bytes()
		if err != nil {
			return err
		}
		p := filepath.Join(*dir, fx.Name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
		fmt.Printf("%s: %d bytes — %s\n", p, len(b), fx.About)
	}
	return nil
}

// images writes a source image (the first MiB of the machine's ELF files,
// or generated data if there are none) and a target derived from it the
// way an update changes a partition: shifted regions (copies with
// dependencies), swapped blocks (a cycle), new code, zeroed space, growth.
func images(args []string) error {
	fl := flag.NewFlagSet("images", flag.ExitOnError)
	mib := fl.Int("mib", 8, "source image size in MiB")
	fl.Parse(args)
	if fl.NArg() != 1 {
		return errors.New("usage: mkcow images [-mib N] DIR")
	}
	dir := fl.Arg(0)
	const bs = 4096
	size := *mib << 20
	src := elfData(size + size/4)
	extra := bytes.Clone(src[size:])
	src = src[:size]
	nb := size / bs
	tgt := bytes.Clone(src)
	// Shift a region down by 3 blocks (an inserted function moves code).
	a, b := nb/8, nb/4
	copy(tgt[a*bs:b*bs], src[(a+3)*bs:(b+3)*bs])
	// Swap two block pairs (a dependency cycle).
	s1, s2 := nb/3, nb/3+1
	copy(tgt[s1*bs:(s1+1)*bs], src[s2*bs:(s2+1)*bs])
	copy(tgt[s2*bs:(s2+1)*bs], src[s1*bs:(s1+1)*bs])
	// New data in the middle, zeros near the end.
	n1 := nb / 2
	copy(tgt[n1*bs:(n1+nb/16)*bs], extra[:nb/16*bs])
	z := nb * 7 / 8
	clear(tgt[z*bs : (z+nb/32)*bs])
	// Grow by 1/8 with new data.
	tgt = append(tgt, extra[nb/16*bs:nb/16*bs+size/8]...)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, img := range map[string][]byte{"source.img": src, "target.img": tgt} {
		if err := os.WriteFile(filepath.Join(dir, name), img, 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("%s/source.img: %d bytes, %s/target.img: %d bytes\n", dir, len(src), dir, len(tgt))
	return nil
}

// elfData returns n bytes of ELF files from /usr/bin (real code, as a
// system partition holds), falling back to generated data.
func elfData(n int) []byte {
	var out []byte
	stop := errors.New("stop")
	filepath.WalkDir("/usr/bin", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil || !bytes.HasPrefix(b, []byte("\x7fELF")) {
			return nil
		}
		out = append(out, b...)
		if len(out) >= n {
			return stop
		}
		return nil
	})
	if len(out) < n {
		out = append(out, cowfixture.Data(7, n-len(out))...)
	}
	return out[:n]
}

func diff(args []string) error {
	fl := flag.NewFlagSet("diff", flag.ExitOnError)
	version := fl.Int("version", 3, "COW version: 2 or 3")
	comp := fl.String("compression", "lz4", "compression \"<algo>[,<level>]\": none, gz, brotli, lz4, zstd (snappy, xz with -allow-nonstandard)")
	factor := fl.Uint("factor", 65536, "v3 compression factor (max_compression_size)")
	clusterOps := fl.Uint("cluster-ops", cow.DefaultClusterOps, "v2 cluster_ops")
	nonstd := fl.Bool("allow-nonstandard", false, "allow the non-AOSP algorithms snappy and xz")
	fl.Parse(args)
	if fl.NArg() != 3 {
		return errors.New("usage: mkcow diff [flags] SOURCE TARGET OUT.cow")
	}
	src, err := os.ReadFile(fl.Arg(0))
	if err != nil {
		return err
	}
	tgt, err := os.ReadFile(fl.Arg(1))
	if err != nil {
		return err
	}
	opts := cow.WriterOptions{
		CompressionFactor: uint32(*factor), ClusterOps: uint32(*clusterOps),
		MaxBlocks: uint64(len(tgt) / cow.DefaultBlockSize), AllowNonstandard: *nonstd, Path: fl.Arg(2),
	}
	if err := opts.SetCompression(*comp); err != nil {
		return err
	}
	f, err := os.Create(fl.Arg(2))
	if err != nil {
		return err
	}
	defer f.Close()
	var w cow.Writer
	switch *version {
	case 2:
		w, err = cow.NewWriterV2(f, opts)
	case 3:
		w, err = cow.NewWriterV3(f, opts)
	default:
		return fmt.Errorf("unsupported COW version %d", *version)
	}
	if err != nil {
		return err
	}
	st, err := cowdiff.Write(w, src, tgt, cow.DefaultBlockSize, true)
	if err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	fmt.Printf("%s: v%d %s, %d bytes for a %d-byte target (%.1f%%): %d blocks, %d unchanged, %d copy, %d replace (%d from cycles), %d zero\n",
		fl.Arg(2), *version, *comp, w.Size(), len(tgt), 100*float64(w.Size())/float64(len(tgt)),
		st.Blocks, st.Unchanged, st.Copies, st.Replaces, st.Cycles, st.Zeros)
	return f.Close()
}

func merge(args []string) error {
	fl := flag.NewFlagSet("merge", flag.ExitOnError)
	fl.Parse(args)
	if fl.NArg() != 3 {
		return errors.New("usage: mkcow merge SOURCE COW OUT.img")
	}
	src, err := os.ReadFile(fl.Arg(0))
	if err != nil {
		return err
	}
	r, err := cow.Open(fl.Arg(1), nil)
	if err != nil {
		return err
	}
	defer r.Close()
	// The base must hold every block the COW writes (the partition may grow).
	var end uint64
	for _, op := range r.Ops() {
		if !op.Type.IsMetadata() {
			end = max(end, op.NewBlock+op.Blocks())
		}
	}
	base := make([]byte, max(len(src), int(end)*int(r.Header().BlockSize)))
	copy(base, src)
	if err := cowdiff.Merge(r, base); err != nil {
		return err
	}
	if err := os.WriteFile(fl.Arg(2), base, 0o644); err != nil {
		return err
	}
	fmt.Printf("%s: merged %d ops in merge order into %d bytes\n", fl.Arg(2), len(r.MergeOrder()), len(base))
	return nil
}
