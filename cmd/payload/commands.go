package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/vabc-go/vabc/internal/cli"
	"github.com/vabc-go/vabc/internal/progress"
	"github.com/vabc-go/vabc/update_engine/apply"
	"github.com/vabc-go/vabc/update_engine/ops"
	"github.com/vabc-go/vabc/update_engine/payload"
	"github.com/vabc-go/vabc/update_engine/sign"
)

func newFlags(name, usageLine string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: payload %s\n\nflags:\n", usageLine)
		fs.PrintDefaults()
	}
	return fs
}

func writeJSON(w io.Writer, v any) error { return cli.WriteJSON(w, v) }

type partInfo struct {
	Name          string         `json:"name"`
	Operations    int            `json:"operations"`
	OpTypes       map[string]int `json:"op_types"`
	NewSize       uint64         `json:"new_size"`
	NewHash       string         `json:"new_hash,omitempty"`
	OldSize       uint64         `json:"old_size,omitempty"`
	OldHash       string         `json:"old_hash,omitempty"`
	DataBytes     uint64         `json:"data_bytes"`
	Verity        bool           `json:"verity"`
	MergeOps      int            `json:"merge_operations,omitempty"`
	EstimateCow   uint64         `json:"estimate_cow_size,omitempty"`
	EstimateOpMax uint64         `json:"estimate_op_count_max,omitempty"`
	Version       string         `json:"version,omitempty"`
}

type info struct {
	Path                 string     `json:"path"`
	ZipOffset            int64      `json:"zip_offset,omitempty"`
	Size                 int64      `json:"size"`
	MajorVersion         uint64     `json:"major_version"`
	MinorVersion         uint32     `json:"minor_version"`
	ManifestSize         uint64     `json:"manifest_size"`
	MetadataSize         int64      `json:"metadata_size"`
	MetadataSigSize      uint32     `json:"metadata_signature_size"`
	BlobOffset           int64      `json:"blob_offset"`
	BlockSize            uint32     `json:"block_size"`
	Delta                bool       `json:"delta"`
	PartialUpdate        bool       `json:"partial_update"`
	Signed               bool       `json:"signed"`
	SignaturesOffset     uint64     `json:"signatures_offset,omitempty"`
	SignaturesSize       uint64     `json:"signatures_size,omitempty"`
	MaxTimestamp         int64      `json:"max_timestamp"`
	SecurityPatchLevel   string     `json:"security_patch_level,omitempty"`
	SnapshotEnabled      bool       `json:"snapshot_enabled"`
	VABCEnabled          bool       `json:"vabc_enabled"`
	VABCCompressionParam string     `json:"vabc_compression_param,omitempty"`
	CowVersion           uint32     `json:"cow_version,omitempty"`
	CompressionFactor    uint64     `json:"compression_factor,omitempty"`
	Partitions           []partInfo `json:"partitions"`
}

func describe(p *payload.Payload) info {
	m := p.Manifest
	dpm := m.GetDynamicPartitionMetadata()
	in := info{
		Path: p.Path, ZipOffset: p.ZipOffset, Size: p.Size(), MajorVersion: p.Header.Major,
		MinorVersion: m.GetMinorVersion(), ManifestSize: p.Header.ManifestSize, MetadataSize: p.Header.MetadataSize(),
		MetadataSigSize: p.Header.MetadataSignatureSize, BlobOffset: p.Header.BlobOffset(), BlockSize: m.GetBlockSize(),
		Delta: p.IsDelta(), PartialUpdate: m.GetPartialUpdate(), Signed: p.Signed(),
		SignaturesOffset: m.GetSignaturesOffset(), SignaturesSize: m.GetSignaturesSize(), MaxTimestamp: m.GetMaxTimestamp(),
		SecurityPatchLevel: m.GetSecurityPatchLevel(), SnapshotEnabled: dpm.GetSnapshotEnabled(), VABCEnabled: dpm.GetVabcEnabled(),
		VABCCompressionParam: dpm.GetVabcCompressionParam(), CowVersion: dpm.GetCowVersion(), CompressionFactor: dpm.GetCompressionFactor(),
	}
	for _, pu := range m.Partitions {
		pi := partInfo{Name: pu.GetPartitionName(), Operations: len(pu.Operations), OpTypes: map[string]int{},
			NewSize: pu.GetNewPartitionInfo().GetSize(), OldSize: pu.GetOldPartitionInfo().GetSize(),
			Verity: pu.HashTreeExtent != nil || pu.FecExtent != nil, MergeOps: len(pu.MergeOperations),
			EstimateCow: pu.GetEstimateCowSize(), EstimateOpMax: pu.GetEstimateOpCountMax(), Version: pu.GetVersion()}
		if h := pu.GetNewPartitionInfo().GetHash(); h != nil {
			pi.NewHash = hex.EncodeToString(h)
		}
		if h := pu.GetOldPartitionInfo().GetHash(); h != nil {
			pi.OldHash = hex.EncodeToString(h)
		}
		for _, op := range pu.Operations {
			pi.OpTypes[payload.TypeName(op.GetType())]++
			pi.DataBytes += op.GetDataLength()
		}
		in.Partitions = append(in.Partitions, pi)
	}
	return in
}

func runInfo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("info", "info [--json] PAYLOAD", stderr)
	asJSON := fs.Bool("json", false, "print one JSON object (format subject to change)")
	path, err := onePayload(fs, args)
	if err != nil {
		return err
	}
	p, err := payload.Open(path)
	if err != nil {
		return err
	}
	defer p.Close()
	in := describe(p)
	if *asJSON {
		return writeJSON(stdout, in)
	}
	kind := "full"
	if in.Delta {
		kind = "delta"
	}
	fmt.Fprintf(stdout, "payload %s: %d bytes, major %d, minor %d (%s), block size %d\n", in.Path, in.Size, in.MajorVersion, in.MinorVersion, kind, in.BlockSize)
	if in.ZipOffset != 0 {
		fmt.Fprintf(stdout, "  inside zip at offset %d\n", in.ZipOffset)
	}
	fmt.Fprintf(stdout, "  manifest %d bytes, metadata %d bytes, metadata signature %d bytes, blobs at %d\n", in.ManifestSize, in.MetadataSize, in.MetadataSigSize, in.BlobOffset)
	if in.Signed {
		fmt.Fprintf(stdout, "  payload signature at blob offset %d, %d bytes\n", in.SignaturesOffset, in.SignaturesSize)
	} else {
		fmt.Fprintln(stdout, "  payload signature: none")
	}
	if in.SecurityPatchLevel != "" || in.MaxTimestamp != 0 {
		fmt.Fprintf(stdout, "  security patch level %q, max timestamp %d\n", in.SecurityPatchLevel, in.MaxTimestamp)
	}
	if in.SnapshotEnabled || in.VABCEnabled {
		fmt.Fprintf(stdout, "  virtual A/B: snapshot %v, vabc %v, compression %q, cow version %d, compression factor %d\n",
			in.SnapshotEnabled, in.VABCEnabled, in.VABCCompressionParam, in.CowVersion, in.CompressionFactor)
	}
	for _, pi := range in.Partitions {
		fmt.Fprintf(stdout, "  %-16s %6d ops  new %d bytes", pi.Name, pi.Operations, pi.NewSize)
		if pi.OldSize != 0 {
			fmt.Fprintf(stdout, "  old %d bytes", pi.OldSize)
		}
		if pi.Verity {
			fmt.Fprint(stdout, "  verity")
		}
		var names []string
		for n := range pi.OpTypes {
			names = append(names, n)
		}
		sort.Strings(names)
		var parts []string
		for _, n := range names {
			parts = append(parts, fmt.Sprintf("%s×%d", n, pi.OpTypes[n]))
		}
		fmt.Fprintf(stdout, "  [%s]\n", strings.Join(parts, " "))
	}
	return nil
}

type verifyResult struct {
	Path              string   `json:"path"`
	Properties        string   `json:"properties"` // "ok", "absent" or the error
	OperationHashes   string   `json:"operation_hashes"`
	MetadataSignature string   `json:"metadata_signature"`
	PayloadSignature  string   `json:"payload_signature"`
	Errors            []string `json:"errors,omitempty"`
}

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("verify", "verify [--key PEM | --otacerts ZIP] [--properties FILE] [--json] PAYLOAD", stderr)
	keyPath := fs.String("key", "", "PEM file with public keys or certificates")
	otacerts := fs.String("otacerts", "", "otacerts.zip whose *x509.pem certificates are trusted")
	propsPath := fs.String("properties", "", "payload_properties.txt to check (default: the one in the OTA zip)")
	asJSON := fs.Bool("json", false, "print one JSON object (format subject to change)")
	path, err := onePayload(fs, args)
	if err != nil {
		return err
	}
	if *keyPath != "" && *otacerts != "" {
		return &cli.UsageError{Msg: "verify: --key and --otacerts are exclusive"}
	}
	var keys sign.Keys
	switch {
	case *keyPath != "":
		keys, err = sign.LoadPEM(*keyPath)
	case *otacerts != "":
		keys, err = sign.LoadOtacerts(*otacerts)
	}
	if err != nil {
		return err
	}
	p, err := payload.Open(path)
	if err != nil {
		return err
	}
	defer p.Close()
	res := verifyResult{Path: path, Properties: "absent", MetadataSignature: "not checked (no key)", PayloadSignature: "not checked (no key)"}
	fail := func(what string, err error) string {
		res.Errors = append(res.Errors, what+": "+err.Error())
		return "FAILED: " + err.Error()
	}
	propsRaw := p.Properties
	if *propsPath != "" {
		if propsRaw, err = os.ReadFile(*propsPath); err != nil {
			return err
		}
	}
	if propsRaw != nil {
		props, err := payload.ParseProperties(propsRaw)
		if err == nil {
			err = p.CheckProperties(props)
		}
		if err != nil {
			res.Properties = fail("properties", err)
		} else {
			res.Properties = "ok"
		}
	}
	res.OperationHashes = "ok"
	n := 0
	for _, pu := range p.Manifest.Partitions {
		for i, op := range pu.Operations {
			if err := ctx.Err(); err != nil {
				return err
			}
			if op.DataSha256Hash == nil || op.GetDataLength() == 0 {
				continue
			}
			blob, err := p.Blob(op)
			if err == nil {
				err = ops.CheckBlob(op, blob)
			}
			if err != nil {
				res.OperationHashes = fail("operation hashes", &payload.OpError{Partition: pu.GetPartitionName(), Index: i, Type: op.GetType(), Err: err})
				break
			}
			n++
		}
	}
	if res.OperationHashes == "ok" {
		res.OperationHashes = fmt.Sprintf("ok (%d blobs)", n)
	}
	if keys != nil {
		r, err := sign.Verify(p, keys)
		res.MetadataSignature, res.PayloadSignature = "ok", "ok"
		if err != nil {
			res.Errors = append(res.Errors, err.Error())
			msg := err.Error()
			if !r.MetadataSignature {
				res.MetadataSignature = "FAILED: " + strings.TrimPrefix(msg, "metadata signature: ")
				res.PayloadSignature = "not checked"
			} else {
				res.PayloadSignature = "FAILED: " + strings.TrimPrefix(msg, "payload signature: ")
			}
		}
	}
	if *asJSON {
		if err := writeJSON(stdout, res); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "%s\n  properties:         %s\n  operation hashes:   %s\n  metadata signature: %s\n  payload signature:  %s\n",
			path, res.Properties, res.OperationHashes, res.MetadataSignature, res.PayloadSignature)
	}
	if len(res.Errors) > 0 {
		return fmt.Errorf("verify failed: %s", strings.Join(res.Errors, "; "))
	}
	return nil
}

func runExtract(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("extract", "extract [--key PEM | --otacerts ZIP] [--allow-unhashed] [-o DIR] [--old DIR] [-p a,b] [--threads N] [--json] PAYLOAD", stderr)
	out := fs.String("o", ".", "output directory for <partition>.img")
	old := fs.String("old", "", "directory with the source <partition>.img files (delta payloads)")
	parts := fs.String("p", "", "comma-separated partitions to extract (default all)")
	threads := fs.Int("threads", 0, "worker goroutines (default: number of CPUs)")
	memLimit := fs.Int64("mem", 512, "MiB of blobs and sources held by in-flight operations")
	asJSON := fs.Bool("json", false, "print one JSON object (format subject to change)")
	trust := addTrustFlags(fs)
	path, err := onePayload(fs, args)
	if err != nil {
		return err
	}
	lim, err := trust.limits("extract")
	if err != nil {
		return err
	}
	p, err := trust.open(ctx, "extract", path, stderr)
	if err != nil {
		return err
	}
	defer p.Close()
	opts := apply.Options{OutDir: *out, OldDir: *old, Threads: *threads, MemoryLimit: *memLimit << 20, Limits: lim}
	if *parts != "" {
		opts.Partitions = strings.Split(*parts, ",")
	}
	bar := progress.New(stderr, "")
	if bar != nil {
		opts.Progress = bar.Update
	}
	start := time.Now()
	res, err := apply.Extract(ctx, p, opts)
	bar.Finish()
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, map[string]any{"partitions": res, "seconds": time.Since(start).Seconds()})
	}
	for _, r := range res {
		check := "no hash in manifest"
		if r.Verified {
			check = "hash ok"
		}
		fmt.Fprintf(stdout, "%s: %d bytes, sha256 %s (%s)\n", r.Path, r.Size, r.SHA256, check)
	}
	return nil
}
