package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vabc-go/vabc/internal/cli"
	"github.com/vabc-go/vabc/update_engine/generate"
	"github.com/vabc-go/vabc/update_engine/sign"
)

const generateUsage = `generate --target DIR [--source DIR] [-p a,b] -o payload.bin [--key PEM]
	[--block-size 4096] [--chunk 2MiB] [--compression xz,bz2|zstd|none] [--minor N]
	[--vabc --cow-version 2|3 --vabc-compression lz4 --compression-factor 64K] [--xor=false]
	[--verity --verity-out DIR [--verity-seed S] [--verity-alg sha256] [--fec-roots 2]]
	[--no-diff] [--no-puffdiff] [--lz4diff [--erofs-compression lz4hc,9]]
	[--threads N] [--zip OTA.zip] [--properties FILE] [--json]

Builds a payload from DIR/<partition>.img images: a full payload without
--source, an incremental one (SOURCE_COPY, BROTLI_BSDIFF, PUFFDIFF, ZERO,
REPLACE_*) with it. --new/--old are aliases of --target/--source.

--lz4diff (off by default, as in AOSP; needs minor version 9 or more, the
default becomes 9) emits LZ4DIFF_BSDIFF / LZ4DIFF_PUFFDIFF operations for the
changed LZ4-compressed files of EROFS images: the client decompresses the
source file, patches it and re-compresses it with liblz4. --erofs-compression
says how mkfs.erofs compressed the target (its -z value: lz4, lz4hc or
lz4hc,N; default lz4hc,9, which is what -zlz4hc means); EROFS images do not
record it. Each operation is checked by applying it, carries postfix patches
for clusters the re-compression does not reproduce, and is used only where it
is smaller than the other operation types. Example:
	payload generate --source old --target new --lz4diff -o payload.bin

--verity treats every given image as the data (filesystem) region of a
verity-enabled partition, as AOSP builds them: the generator appends a
dm-verity hash tree over the data (salt = SHA-256(seed, 0, partition name))
and a Reed-Solomon FEC region over data + tree, to the target and to the
source images alike, and the payload updates between these extended images.
They are written to --verity-out DIR as DIR/target/<partition>.img and
DIR/source/<partition>.img: apply the payload to the source ones and compare
with the target ones. Incremental payloads set hash_tree_* / fec_* and carry
no operations for the tree and FEC blocks (update_engine regenerates them);
full payloads carry no verity fields (update_engine rejects them there) and
their operations cover the tree and FEC. new_partition_info.hash covers the
whole extended image.`

// runGenerate implements `payload generate`.
func runGenerate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("generate", generateUsage, stderr)
	var target, source, parts string
	fs.StringVar(&target, "target", "", "directory with the new <partition>.img files (required)")
	fs.StringVar(&target, "new", "", "alias of --target")
	fs.StringVar(&source, "source", "", "directory with the old <partition>.img files (incremental payload)")
	fs.StringVar(&source, "old", "", "alias of --source")
	fs.StringVar(&parts, "p", "", "comma-separated partitions (default: every *.img in --target, sorted)")
	fs.StringVar(&parts, "partitions", "", "alias of -p")
	out := fs.String("o", "", "output payload.bin (required)")
	keys := fs.String("key", "", "comma-separated PEM private keys (RSA 2048/4096 or ECDSA) to sign with")
	blockSize := fs.Int("block-size", 4096, "block size in bytes")
	chunk := fs.String("chunk", "2MiB", "largest destination size of one REPLACE / diff operation")
	compression := fs.String("compression", "xz,bz2", "REPLACE compressions to choose from (xz, bz2, zstd, none); the smallest wins")
	minor := fs.Int("minor", -1, "minor version (default: 0 full, 8 incremental, 9 with --lz4diff, 10 with zstd)")
	vabc := fs.Bool("vabc", false, "add Virtual A/B compression metadata (merge operations, COW estimates)")
	cowVersion := fs.Int("cow-version", 2, "COW format version (2 or 3) with --vabc")
	vabcCompression := fs.String("vabc-compression", "lz4", "vabc_compression_param with --vabc (e.g. lz4, gz,9, zstd, brotli, none)")
	factor := fs.String("compression-factor", "", "COW v3 compression factor with --vabc (4K…128K)")
	xor := fs.Bool("xor", true, "emit COW_XOR merge operations for diff operations with --vabc")
	threads := fs.Int("threads", 0, "worker goroutines (default: number of CPUs); output does not depend on it")
	zipPath := fs.String("zip", "", "also write an A/B OTA zip (stored payload.bin, payload_properties.txt, META-INF/com/android/metadata{,.pb})")
	propsPath := fs.String("properties", "", "also write payload_properties.txt here")
	maxTimestamp := fs.Int64("max-timestamp", 0, "manifest max_timestamp (anti-downgrade)")
	brotliQuality := fs.Int("brotli-quality", 9, "brotli quality for BSDF2 streams (AOSP uses 11)")
	noDiff := fs.Bool("no-diff", false, "never emit bsdiff operations")
	noPuffdiff := fs.Bool("no-puffdiff", false, "never emit PUFFDIFF operations (otherwise tried from minor 5 for zip/gzip data)")
	lz4diffOn := fs.Bool("lz4diff", false, "emit LZ4DIFF operations for the changed LZ4 files of EROFS images (minor ≥ 9, see below)")
	erofsCompression := fs.String("erofs-compression", generate.DefaultLZ4DiffCompression, "with --lz4diff: the target's mkfs.erofs -z compressor (lz4, lz4hc, lz4hc,N)")
	verityOn := fs.Bool("verity", false, "append a dm-verity hash tree and FEC to every image (see below); needs --verity-out")
	verityOut := fs.String("verity-out", "", "with --verity: write the extended images to DIR/target/ and DIR/source/")
	veritySeed := fs.String("verity-seed", "vabc-verity", "with --verity: seed of the hash-tree salts (deterministic)")
	verityAlg := fs.String("verity-alg", "sha256", "with --verity: hash_tree_algorithm (sha1, sha256, sha512)")
	fecRoots := fs.Int("fec-roots", 2, "with --verity: fec_roots (2…24)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return &cli.UsageError{Msg: fmt.Sprintf("generate: unexpected arguments %q", pos)}
	}
	if target == "" || *out == "" {
		fs.Usage()
		return &cli.UsageError{Msg: "generate: --target and -o are required"}
	}
	chunkSize, err := parseSize(*chunk)
	if err != nil {
		return &cli.UsageError{Msg: fmt.Sprintf("generate: --chunk: %v", err)}
	}
	comps, err := generate.ParseCompressions(*compression)
	if err != nil {
		return &cli.UsageError{Msg: err.Error()}
	}
	if comps == nil {
		comps = []generate.Compression{}
	}
	cfg := generate.Config{
		BlockSize:     *blockSize,
		ChunkSize:     int(chunkSize),
		MinorVersion:  *minor,
		Compressions:  comps,
		BrotliQuality: *brotliQuality,
		DisableDiff:   *noDiff,
		Threads:       *threads,
		MaxTimestamp:  *maxTimestamp,
	}
	cfg.DisablePuffdiff = *noPuffdiff
	cfg.LZ4Diff = *lz4diffOn
	cfg.LZ4DiffCompression = *erofsCompression
	if *lz4diffOn {
		if _, _, err := generate.ParseLZ4DiffCompression(*erofsCompression); err != nil {
			return &cli.UsageError{Msg: "generate: --erofs-compression: " + err.Error()}
		}
	}
	if cfg.Threads <= 0 {
		cfg.Threads = max(1, runtime.GOMAXPROCS(0))
	}
	if *vabc {
		v := &generate.VABC{CowVersion: uint32(*cowVersion), Compression: *vabcCompression, XOR: *xor}
		if *factor != "" {
			f, err := parseSize(*factor)
			if err != nil {
				return &cli.UsageError{Msg: fmt.Sprintf("generate: --compression-factor: %v", err)}
			}
			v.CompressionFactor = uint64(f)
		}
		cfg.VABC = v
	} else if *factor != "" {
		return &cli.UsageError{Msg: "generate: --compression-factor needs --vabc"}
	}
	if *verityOn {
		if *verityOut == "" {
			return &cli.UsageError{Msg: "generate: --verity needs --verity-out DIR (the extended images the payload updates between)"}
		}
		cfg.Verity = &generate.Verity{Algorithm: *verityAlg, Seed: *veritySeed, FECRoots: *fecRoots}
	} else if *verityOut != "" {
		return &cli.UsageError{Msg: "generate: --verity-out needs --verity"}
	}
	if *keys != "" {
		for _, k := range strings.Split(*keys, ",") {
			s, err := sign.LoadPrivateKey(k)
			if err != nil {
				return err
			}
			cfg.Signers = append(cfg.Signers, s)
		}
	}
	names, err := partitionNames(target, parts)
	if err != nil {
		return err
	}
	for _, n := range names {
		p := generate.Partition{Name: n}
		if p.New, err = os.ReadFile(filepath.Join(target, n+".img")); err != nil {
			return fmt.Errorf("generate: partition %s: %w", n, err)
		}
		if source != "" {
			if p.Old, err = os.ReadFile(filepath.Join(source, n+".img")); err != nil {
				return fmt.Errorf("generate: partition %s: source image: %w", n, err)
			}
		}
		cfg.Partitions = append(cfg.Partitions, p)
	}
	start := time.Now()
	res, err := generate.Generate(ctx, cfg)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(*out, res.Payload); err != nil {
		return err
	}
	if cfg.Verity != nil {
		for _, im := range res.Images {
			for _, x := range []struct {
				sub string
				img []byte
			}{{"target", im.New}, {"source", im.Old}} {
				if x.img == nil {
					continue
				}
				d := filepath.Join(*verityOut, x.sub)
				if err := os.MkdirAll(d, 0o755); err != nil {
					return err
				}
				if err := writeFileAtomic(filepath.Join(d, im.Name+".img"), x.img); err != nil {
					return err
				}
			}
		}
	}
	if *propsPath != "" {
		if err := writeFileAtomic(*propsPath, res.Properties()); err != nil {
			return err
		}
	}
	if *zipPath != "" {
		var zb bytes.Buffer
		if err := res.WriteOTAZip(&zb); err != nil {
			return err
		}
		if err := writeFileAtomic(*zipPath, zb.Bytes()); err != nil {
			return err
		}
	}
	secs := time.Since(start).Seconds()
	if *asJSON {
		return writeJSON(stdout, map[string]any{
			"path":          *out,
			"size":          len(res.Payload),
			"metadata_size": res.MetadataSize,
			"minor_version": res.Manifest.GetMinorVersion(),
			"signed":        len(cfg.Signers) > 0,
			"verity":        cfg.Verity != nil,
			"partitions":    res.Stats,
			"seconds":       secs,
		})
	}
	kind := "full"
	if source != "" {
		kind = "incremental"
	}
	fmt.Fprintf(stdout, "%s: %s payload, %d bytes, minor %d, %d partition(s), %.2fs\n",
		*out, kind, len(res.Payload), res.Manifest.GetMinorVersion(), len(res.Stats), secs)
	for _, s := range res.Stats {
		var ops []string
		for t, n := range s.Ops {
			ops = append(ops, fmt.Sprintf("%s×%d", t, n))
		}
		sort.Strings(ops)
		fmt.Fprintf(stdout, "  %-12s %8d blob bytes  %s", s.Name, s.BlobBytes, strings.Join(ops, " "))
		if cfg.VABC != nil {
			fmt.Fprintf(stdout, "  merge ops %d (dropped %d), estimate_cow_size %d", s.MergeOps, s.DroppedOps, s.CowSize)
		}
		fmt.Fprintln(stdout)
	}
	return nil
}

// partitionNames returns the -p list or every *.img in dir, sorted.
func partitionNames(dir, list string) ([]string, error) {
	if list != "" {
		return strings.Split(list, ","), nil
	}
	m, err := filepath.Glob(filepath.Join(dir, "*.img"))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, p := range m {
		names = append(names, strings.TrimSuffix(filepath.Base(p), ".img"))
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, fmt.Errorf("generate: no *.img files in %s", dir)
	}
	return names, nil
}

// parseSize parses 4096, 64K, 64k, 2M, 2MiB, 1G.
func parseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSpace(s), "iB"), "B")
	mul := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k', 'K':
			mul, t = 1<<10, t[:n-1]
		case 'm', 'M':
			mul, t = 1<<20, t[:n-1]
		case 'g', 'G':
			mul, t = 1<<30, t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return v * mul, nil
}

func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
