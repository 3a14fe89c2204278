// Command cowctl inspects, creates, applies, verifies, estimates and maps
// Android Virtual A/B COW images.
//
//	cowctl inspect [flags] COW
//	cowctl create --source OLD.img --target NEW.img -o X.cow [flags]
//	cowctl apply --source IMG --cow X.cow (-o NEW.img | --in-place) [flags]
//	cowctl verify --source OLD.img --cow X.cow --target NEW.img
//	cowctl estimate --source OLD.img --target NEW.img [flags]
//	cowctl map [--png OUT.png] [--json] [--source IMG] COW
//
// Exit status: 0 on success, 1 on errors, 2 on usage errors.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

type command struct {
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
	summary string
}

var commands = map[string]command{
	"inspect":  {runInspect, "parse a COW image and print its header, ops and merge order"},
	"create":   {runCreate, "build a COW from a source and a target image (create_snapshot)"},
	"apply":    {runApply, "merge a COW into an image offline (-o NEW.img or --in-place, resumable)"},
	"verify":   {runVerify, "check that source + COW reproduce the target image"},
	"estimate": {runEstimate, "predict the COW size and op counts without writing"},
	"map":      {runMap, "draw the partition's blocks by op type and merge progress (--png, --json runs)"},
}

// planned lists subcommands that exist in AOSP-style tooling but are not
// implemented in this version; they are refused with a clear message.
var planned = map[string]bool{}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: cowctl <command> [flags] [args]")
	fmt.Fprintln(w, "\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(w, `
examples:
  cowctl create --source old.img --target new.img -o system.cow --cow-version 3 --compression lz4
  cowctl inspect --verify-merge-sequence --decompress system.cow
  cowctl verify --source old.img --cow system.cow --target new.img
  cowctl apply --source base.img --cow system.cow --in-place       # offline merge, resumable after a crash
  cowctl map --png system.png --source base.img system.cow         # blocks by op type and merge progress
`)
	fmt.Fprintln(w, "\nRun 'cowctl <command> --help' for the flags of a command.")
}

// run dispatches a command line and returns the process exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return 0
	}
	cmd, ok := commands[name]
	if !ok {
		if planned[name] {
			fmt.Fprintf(stderr, "cowctl: unknown command %q (not implemented in this version)\n", name)
		} else {
			fmt.Fprintf(stderr, "cowctl: unknown command %q\n", name)
		}
		usage(stderr)
		return 2
	}
	err := cmd.run(ctx, args[1:], stdout, stderr)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "cowctl %s: %v\n", name, err)
	var ue *usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal cancels ctx the handler is removed: a second
	// SIGINT/SIGTERM ends the process at once.
	context.AfterFunc(ctx, stop)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	reportPeakRSS()
	stop()
	os.Exit(code)
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
