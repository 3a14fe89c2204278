// Command payload inspects, verifies and extracts Android OTA payloads
// (payload.bin, or an OTA zip holding it).
//
//	payload info [--json] PAYLOAD
//	payload verify [--key PEM | --otacerts ZIP] [--properties FILE] [--json] PAYLOAD
//	payload extract [-o DIR] [--old DIR] [-p a,b] [--threads N] [--json] PAYLOAD
//	payload generate --target DIR [--source DIR] -o payload.bin … (generate.go)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// usageError makes main exit with status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"info", "print the header, manifest and operation summary", runInfo},
	{"verify", "check properties, operation hashes and signatures", runVerify},
	{"extract", "write <partition>.img files (full or delta payloads)", runExtract},
	{"generate", "build a full or incremental payload from partition images", runGenerate},
	{"apply-cow", "write VABC COW files (<partition>.cow), resumable", runApplyCOW},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: payload COMMAND [flags] PAYLOAD\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nPAYLOAD is payload.bin or an OTA zip with a stored payload.bin. Run 'payload COMMAND --help' for flags.")
	fmt.Fprint(w, `
examples:
  payload generate --source old/ --target new/ -o payload.bin --key release.pem --vabc --cow-version 3
  payload info payload.bin
  payload verify --key release.pub.pem payload.bin
  payload extract --old old/ -o out/ ota.zip                       # write out/<partition>.img
  payload apply-cow --old old/ -o cows/ payload.bin                # write cows/<partition>.cow, as a device does
`)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return usageError{"no command"}
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return nil
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	usage(stderr)
	return usageError{fmt.Sprintf("unknown command %q", args[0])}
}

// parseFlags parses flags that may come before or after positional
// arguments and returns the positional ones.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func onePayload(fs *flag.FlagSet, args []string) (string, error) {
	pos, err := parseFlags(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		fs.Usage()
		return "", usageError{fmt.Sprintf("%s: want exactly one PAYLOAD argument, got %d", fs.Name(), len(pos))}
	}
	return pos[0], nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(usageError)):
		fmt.Fprintln(os.Stderr, "payload:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "payload:", err)
		os.Exit(1)
	}
}
