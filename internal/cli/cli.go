// Package cli holds what vabc's command-line tools share: usage errors and
// their exit status (2, other errors 1), flag parsing that treats --help as
// success and counts positional arguments, the --json encoder (one indented
// object, snake_case keys chosen by the caller) and a Main that turns
// SIGINT/SIGTERM into context cancellation. It follows the style guide's CLI
// rules: each subcommand is run(ctx, args, stdout, stderr) error, errors go
// to stderr prefixed with the tool's name.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// UsageError is a command-line mistake: the tool exits with status 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a *UsageError with a formatted message.
func Usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// IsUsage reports whether err is (or wraps) a *UsageError.
func IsUsage(err error) bool {
	var ue *UsageError
	return errors.As(err, &ue)
}

// ExitCode is the process exit status for err: 0 for nil and for a --help
// request, 2 for usage errors, 1 otherwise.
func ExitCode(err error) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case IsUsage(err):
		return 2
	}
	return 1
}

// Any number of positional arguments, for ParseFlags.
const AnyArgs = -1

// ParseFlags parses args with fs. done is true when --help was asked for
// (fs printed its usage): the caller returns nil. Parse errors and a number
// of positional arguments other than nargs (unless AnyArgs) are usage
// errors.
func ParseFlags(fs *flag.FlagSet, args []string, nargs int) (done bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, &UsageError{Msg: err.Error()}
	}
	if nargs == AnyArgs || fs.NArg() == nargs {
		return false, nil
	}
	if nargs == 0 {
		return false, Usagef("unexpected argument %q", fs.Arg(0))
	}
	return false, Usagef("want %d argument(s), got %d", nargs, fs.NArg())
}

// WriteJSON writes v as one indented JSON object and a newline.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Main runs a tool's run function with a context cancelled by SIGINT or
// SIGTERM, prints a non-usage error as "name: err" on stderr (usage errors
// are printed the same way; run prints any usage text itself) and exits with
// ExitCode.
func Main(name string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	}
	os.Exit(ExitCode(err))
}
