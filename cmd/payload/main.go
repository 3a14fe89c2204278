// Command payload inspects, verifies and extracts Android OTA payloads
// (payload.bin, or an OTA zip holding it).
//
//	payload info [--json] PAYLOAD
//	payload verify [--key PEM | --otacerts ZIP] [--properties FILE] [--json] PAYLOAD
//	payload extract [-o DIR] [--old DIR] [-p a,b] [--threads N] [--json] PAYLOAD
//	payload generate --target DIR [--source DIR] -o payload.bin … (generate.go)
//	payload puffpatch --src FILE --patch FILE -o OUT (puffin.go)
//	payload puffdiff --src FILE --dst FILE -o PATCH
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/vabc-go/vabc/internal/cli"
)

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
	{"puffpatch", "apply a puffin (PUF1) patch to a file", runPuffpatch},
	{"puffdiff", "make a puffin (PUF1) patch between two files with deflate data", runPuffdiff},
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
		return &cli.UsageError{Msg: "no command"}
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
	return &cli.UsageError{Msg: fmt.Sprintf("unknown command %q", args[0])}
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
			return nil, &cli.UsageError{Msg: err.Error()}
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
		return "", &cli.UsageError{Msg: fmt.Sprintf("%s: want exactly one PAYLOAD argument, got %d", fs.Name(), len(pos))}
	}
	return pos[0], nil
}

// memoryLimit is the Go heap's soft limit unless GOMEMLIMIT says otherwise:
// the collector works harder as the heap nears it, so a freed 200 MiB
// operation buffer is reclaimed before the next one is allocated instead
// of the heap doubling (GOGC alone lets it grow to twice the live size).
const memoryLimit = 256 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first SIGINT/SIGTERM cancels ctx: long work stops, partial
	// outputs and temp files are removed, the exit status is 1. Once ctx
	// is cancelled the handler is removed, so a second signal takes the
	// default action and ends the process at once.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	reportPeakRSS()
	if errors.Is(err, context.Canceled) && context.Cause(ctx) != nil {
		err = fmt.Errorf("stopped: %w", context.Cause(ctx)) // "interrupt signal received"
	}
	stop()
	if code := cli.ExitCode(err); code != 0 {
		fmt.Fprintln(os.Stderr, "payload:", err)
		os.Exit(code)
	}
}

// reportPeakRSS writes this process's peak resident set (VmHWM) to the file
// named by $VABC_PEAK_RSS_FILE, if set. Tests use it: a child's rusage
// maxrss also counts the parent's memory before exec.
func reportPeakRSS() {
	path := os.Getenv("VABC_PEAK_RSS_FILE")
	if path == "" {
		return
	}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			os.WriteFile(path, []byte(strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:"))), 0o644)
		}
	}
}
