package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/vabc-go/vabc/internal/cli"
	"github.com/vabc-go/vabc/update_engine/payload"
	"github.com/vabc-go/vabc/update_engine/sign"
)

// trustFlags are the authentication and bound flags of the commands that
// write output from a payload (extract, apply-cow).
type trustFlags struct {
	key, otacerts    string
	allowUnhashed    bool
	maxPartitionSize string
}

func addTrustFlags(fs *flag.FlagSet) *trustFlags {
	t := &trustFlags{}
	fs.StringVar(&t.key, "key", "", "PEM file with the trusted public keys or certificates: the payload must be signed by one")
	fs.StringVar(&t.otacerts, "otacerts", "", "otacerts.zip whose *x509.pem certificates are trusted (as /system/etc/security/otacerts.zip)")
	fs.BoolVar(&t.allowUnhashed, "allow-unhashed", false, "accept operations without data_sha256_hash and partitions without new_partition_info.hash")
	fs.StringVar(&t.maxPartitionSize, "max-partition-size", "64G", "refuse partitions the payload says are larger than this")
	return t
}

// limits returns the payload limits the flags select.
func (t *trustFlags) limits(cmd string) (payload.Limits, error) {
	lim := payload.Limits{AllowUnhashed: t.allowUnhashed}
	n, err := parseSize(t.maxPartitionSize)
	if err != nil {
		return lim, &cli.UsageError{Msg: fmt.Sprintf("%s: --max-partition-size %q: want a size such as 64G", cmd, t.maxPartitionSize)}
	}
	lim.MaxPartitionSize = n
	return lim, nil
}

// open opens the payload at path. With a key, the metadata signature is
// checked before the manifest is parsed and the payload signature before
// the caller writes anything; any failure refuses the payload with a
// one-line reason. Without a key a warning says nothing was authenticated.
func (t *trustFlags) open(ctx context.Context, cmd, path string, stderr io.Writer) (*payload.Payload, error) {
	if t.key != "" && t.otacerts != "" {
		return nil, &cli.UsageError{Msg: cmd + ": --key and --otacerts are exclusive"}
	}
	var keys sign.Keys
	var err error
	switch {
	case t.key != "":
		keys, err = sign.LoadPEM(t.key)
	case t.otacerts != "":
		keys, err = sign.LoadOtacerts(t.otacerts)
	default:
		fmt.Fprintf(stderr, "payload: warning: %s is not authenticated (no --key or --otacerts given)\n", path)
		return payload.Open(path)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: loading keys: %w", cmd, err)
	}
	p, err := payload.OpenOptions(path, &payload.Options{VerifyMetadata: keys.MetadataVerifier()})
	if err != nil {
		return nil, fmt.Errorf("refusing %s: %w", path, err)
	}
	if err := sign.VerifyPayloadSignature(ctx, p, keys); err != nil {
		p.Close()
		return nil, fmt.Errorf("refusing %s: %w", path, err)
	}
	return p, nil
}
