// Command snapshotctl talks to a running snapuserd over its control socket
// (AOSP protocol, through snapuserd/client).
//
//	snapshotctl [-socket PATH] [--json] COMMAND [ARGS]
//
// Commands: query, init MISC COW BACKING BASE, start MISC, status MISC,
// merge MISC..., merge-percent, pause, resume, delete MISC, verify, detach,
// stop, wait MISC... (progress bar on a terminal until every merge is
// complete; exits 1 if one failed).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/vabc-go/vabc/internal/cli"
	"github.com/vabc-go/vabc/snapuserd/client"
	"github.com/vabc-go/vabc/snapuserd/proto"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	code := cli.ExitCode(err)
	if code != 0 && !errors.Is(err, errUsage) { // errUsage: the usage text is out already
		fmt.Fprintln(os.Stderr, "snapshotctl:", err)
	}
	os.Exit(code)
}

// errUsage is a command-line mistake whose usage text has been printed.
var errUsage error = &cli.UsageError{Msg: "usage"}

type env struct {
	ctx       context.Context
	socket    string
	jsonOut   bool
	timeout   time.Duration
	interval  time.Duration
	stdout    io.Writer
	stderr    io.Writer
	stderrTTY bool
}

type command struct {
	args  string
	help  string
	nargs int // -1: one or more
	run   func(e *env, c *client.Client, args []string) error
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"query":         {"", "print the daemon's liveness reply (active/passive)", 0, cmdQuery},
		"init":          {"MISC COW BACKING BASE", "create a handler; prints the device size in sectors", 4, cmdInit},
		"start":         {"MISC", "attach (start serving) a handler", 1, cmdStart},
		"status":        {"MISC", "print the exact getstatus reply", 1, cmdStatus},
		"merge":         {"MISC...", "initiate the merge of each partition", -1, cmdMerge},
		"merge-percent": {"", "print the daemon-wide merge percentage", 0, cmdMergePercent},
		"pause":         {"", "pause all merges", 0, cmdPause},
		"resume":        {"", "resume all merges", 0, cmdResume},
		"delete":        {"MISC", "tear a handler down", 1, cmdDelete},
		"verify":        {"", "query update verification (update-verify)", 0, cmdVerify},
		"detach":        {"", "stop merges and let the daemon exit when its devices are gone (no reply)", 0, cmdDetach},
		"stop":          {"", "stop the daemon (no reply)", 0, cmdStop},
		"wait":          {"MISC...", "wait until every merge is complete; exit 1 if one failed", -1, cmdWait},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: snapshotctl [-socket PATH] [--json] [-timeout D] COMMAND [ARGS]\n\ncommands:\n")
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := commands[n]
		fmt.Fprintf(w, "  %-28s %s\n", strings.TrimSpace(n+" "+c.args), c.help)
	}
	fmt.Fprint(w, `
examples:
  snapshotctl -socket /tmp/snapuserd.sock init system system.cow base.img base.img
  snapshotctl -socket /tmp/snapuserd.sock start system
  snapshotctl -socket /tmp/snapuserd.sock merge system
  snapshotctl -socket /tmp/snapuserd.sock wait system               # until snapshot-merge-complete
  snapshotctl -socket /tmp/snapuserd.sock --json status system
`)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	e := &env{ctx: ctx, stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("snapshotctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&e.socket, "socket", proto.SocketPath(proto.DefaultSocketName), "snapuserd control socket")
	fs.BoolVar(&e.jsonOut, "json", false, "print one JSON object")
	fs.DurationVar(&e.timeout, "timeout", 10*time.Second, "how long to retry connecting")
	fs.DurationVar(&e.interval, "interval", 500*time.Millisecond, "poll interval for wait")
	fs.Usage = func() { usage(stderr); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	rest := fs.Args()
	if len(rest) == 0 {
		usage(stderr)
		return errUsage
	}
	cmd, ok := commands[rest[0]]
	if !ok {
		fmt.Fprintf(stderr, "snapshotctl: unknown command %q\n", rest[0])
		usage(stderr)
		return errUsage
	}
	// Flags may also follow the command name.
	sub := flag.NewFlagSet(rest[0], flag.ContinueOnError)
	sub.SetOutput(stderr)
	sub.BoolVar(&e.jsonOut, "json", e.jsonOut, "print one JSON object")
	if err := sub.Parse(rest[1:]); err != nil {
		return errUsage
	}
	cargs := sub.Args()
	if (cmd.nargs >= 0 && len(cargs) != cmd.nargs) || (cmd.nargs < 0 && len(cargs) == 0) {
		fmt.Fprintf(stderr, "usage: snapshotctl %s %s\n", rest[0], cmd.args)
		return errUsage
	}
	if f, ok := stderr.(*os.File); ok {
		e.stderrTTY = term.IsTerminal(int(f.Fd()))
	}
	c, err := client.Connect(ctx, e.socket, e.timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	return cmd.run(e, c, cargs)
}

// print writes a value as JSON ({key: v}) or as text.
func (e *env) print(obj map[string]any, text string) error {
	if e.jsonOut {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(obj)
	}
	_, err := fmt.Fprintln(e.stdout, text)
	return err
}

func cmdQuery(e *env, c *client.Client, _ []string) error {
	r, err := c.Query()
	if err != nil {
		return err
	}
	return e.print(map[string]any{"reply": r}, r)
}

func cmdInit(e *env, c *client.Client, a []string) error {
	n, err := c.InitDmUserCow(a[0], a[1], a[2], a[3])
	if err != nil {
		return err
	}
	return e.print(map[string]any{"misc_name": a[0], "num_sectors": n}, fmt.Sprint(n))
}

func cmdStart(e *env, c *client.Client, a []string) error { return c.AttachDmUser(a[0]) }

func cmdStatus(e *env, c *client.Client, a []string) error {
	s, err := c.QuerySnapshotStatus(a[0])
	if err != nil {
		return err
	}
	return e.print(map[string]any{"misc_name": a[0], "status": s}, s)
}

func cmdMerge(e *env, c *client.Client, a []string) error {
	for _, m := range a {
		if err := c.InitiateMerge(m); err != nil {
			return err
		}
	}
	return nil
}

func cmdMergePercent(e *env, c *client.Client, _ []string) error {
	p, err := c.GetMergePercent()
	if err != nil {
		return err
	}
	return e.print(map[string]any{"merge_percent": p}, fmt.Sprintf("%f", p))
}

func cmdPause(e *env, c *client.Client, _ []string) error  { return c.PauseMerge() }
func cmdResume(e *env, c *client.Client, _ []string) error { return c.ResumeMerge() }
func cmdDelete(e *env, c *client.Client, a []string) error { return c.WaitForDeviceDelete(a[0]) }
func cmdDetach(e *env, c *client.Client, _ []string) error { return c.DetachSnapuserd() }
func cmdStop(e *env, c *client.Client, _ []string) error   { return c.StopSnapuserd() }

func cmdVerify(e *env, c *client.Client, _ []string) error {
	ok, err := c.QueryUpdateVerification()
	if err != nil {
		return err
	}
	if err := e.print(map[string]any{"verified": ok}, map[bool]string{true: "success", false: "fail"}[ok]); err != nil {
		return err
	}
	if !ok {
		return errors.New("update verification failed")
	}
	return nil
}

// cmdWait polls getstatus for every partition until all are complete or
// one failed, drawing a progress bar from merge_percent on a terminal.
func cmdWait(e *env, c *client.Client, names []string) error {
	tick := time.NewTicker(e.interval)
	defer tick.Stop()
	for {
		statuses := map[string]string{}
		done, failed := 0, []string{}
		for _, n := range names {
			s, err := c.QuerySnapshotStatus(n)
			if err != nil {
				return err
			}
			statuses[n] = s
			switch s {
			case proto.StatusMergeComplete:
				done++
			case proto.StatusMergeFailed:
				failed = append(failed, n)
			}
		}
		pct, err := c.GetMergePercent()
		if err != nil {
			return err
		}
		if e.stderrTTY && !e.jsonOut {
			const width = 40
			fill := min(width, int(pct*width/100))
			fmt.Fprintf(e.stderr, "\r[%s%s] %6.2f%% (%d/%d complete)", strings.Repeat("#", fill), strings.Repeat(".", width-fill), pct, done, len(names))
		}
		if len(failed) > 0 || done == len(names) {
			if e.stderrTTY && !e.jsonOut {
				fmt.Fprintln(e.stderr)
			}
			var lines []string
			for _, n := range names {
				lines = append(lines, n+": "+statuses[n])
			}
			if err := e.print(map[string]any{"statuses": statuses, "merge_percent": pct}, strings.Join(lines, "\n")); err != nil {
				return err
			}
			if len(failed) > 0 {
				return fmt.Errorf("merge failed: %s", strings.Join(failed, ", "))
			}
			return nil
		}
		select {
		case <-e.ctx.Done():
			return e.ctx.Err()
		case <-tick.C:
		}
	}
}
