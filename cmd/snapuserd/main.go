// Command snapuserd serves Android userspace snapshots (base + COW → the
// updated partition) over dm-user, or over FUSE on any Linux host, and speaks
// AOSP's snapuserd control protocol on a Unix socket. Flags follow AOSP's
// /system/bin/snapuserd (-x and --x both work; dashes and underscores in
// names are interchangeable):
//
//	snapuserd [-socket NAME|PATH] [-worker_count N] [-o_direct] ...
//	snapuserd -no_socket [-worker_count N] misc,cow,backing,base ...
//	snapuserd -fuse_mount DIR -socket /tmp/snapuserd.sock
//
// Modes as AOSP's daemon: init with 5 fields (or a 4-part -no_socket
// argument) serves a userspace snapshot; init with 4 fields (misc,cow,backing;
// 3 parts with -no_socket) serves Android 12's dm-snapshot compatibility mode
// (snapuserd/legacy) unless -user_snapshot forces userspace snapshots.
//
// Ours: -fuse_mount DIR exports every handler as the read-only file
// DIR/<misc> instead of using /dev/dm-user; -dm_user_dir DIR overrides
// /dev/dm-user; -allow_uid UID[,UID] admits non-root control clients.
//
// Merges (initiate_merge): -num_merge_threads N partitions at once (default
// 2, ro.virtual_ab.num_merge_threads), each on a thread with nice
// -merge_thread_priority (default 10) in the idle I/O class unless
// -merge_io_idle=false; -io_uring and -cow_op_merge_size apply to them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/vabc-go/vabc/internal/cli"
	"github.com/vabc-go/vabc/kernel/fuse"
	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/legacy"
	"github.com/vabc-go/vabc/snapuserd/proto"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	code := cli.ExitCode(err)
	if code != 0 && !errors.Is(err, errUsage) { // errUsage: the usage text is out already
		fmt.Fprintln(os.Stderr, "snapuserd:", err)
	}
	os.Exit(code)
}

// errUsage is a command-line mistake whose usage text has been printed.
var errUsage error = &cli.UsageError{Msg: "usage"}

// testFrontend, set only by this package's tests (in a re-executed test
// binary acting as the daemon), replaces the dm-user/FUSE frontend.
var testFrontend snapuserd.Frontend

type config struct {
	socket        string
	noSocket      bool
	socketHandoff bool
	userSnapshot  bool
	ioUring       bool
	oDirect       bool
	cowOpMerge    int
	workerCount   int
	fuseMount     string
	dmUserDir     string
	allowUID      string
	aliveFile     string
	verbose       bool
	mergeThreads  int
	mergeNice     int
	mergeIOIdle   bool
	positional    []string
	workerSet     bool
}

// normalize rewrites -socket-handoff style names to the underscore form, as
// gflags does.
func normalize(args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if !strings.HasPrefix(a, "-") {
			out = append(out, a)
			continue
		}
		dashes := 1
		if strings.HasPrefix(a, "--") {
			dashes = 2
		}
		name, val, hasVal := strings.Cut(a[dashes:], "=")
		name = strings.ReplaceAll(name, "-", "_")
		a = a[:dashes] + name
		if hasVal {
			a += "=" + val
		}
		out = append(out, a)
	}
	return out
}

func parse(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("snapuserd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.socket, "socket", proto.DefaultSocketName, "control socket: a name in /dev/socket or a path")
	fs.BoolVar(&c.noSocket, "no_socket", false, "no control socket; each positional argument misc,cow,backing,base is initialized and started")
	fs.BoolVar(&c.socketHandoff, "socket_handoff", false, "act as snapuserd_proxy: hand the control socket (-socket) over the proxy socket (snapuserd_proxy, or <socket>_proxy for a path) to the -no_socket daemon, then exit")
	fs.BoolVar(&c.userSnapshot, "user_snapshot", false, "force userspace snapshots: refuse the legacy (Android 12 dm-snapshot) init form; without it a 4-field init (misc,cow,backing) serves the COW as a dm-snapshot exception store")
	fs.BoolVar(&c.ioUring, "io_uring", false, "send merge writes through io_uring when the kernel allows it (falls back to synchronous I/O); reads stay synchronous")
	fs.BoolVar(&c.oDirect, "o_direct", false, "read the source device with O_DIRECT")
	fs.IntVar(&c.cowOpMerge, "cow_op_merge_size", 0, "cap of ops per merge I/O batch (0 = uncapped)")
	fs.IntVar(&c.mergeThreads, "num_merge_threads", 2, "partitions merging at once (ro.virtual_ab.num_merge_threads); others wait queued")
	fs.IntVar(&c.mergeNice, "merge_thread_priority", 10, "nice value of merge threads (ro.virtual_ab.merge_thread_priority; 0 = unchanged)")
	fs.BoolVar(&c.mergeIOIdle, "merge_io_idle", true, "run merge threads in the idle I/O scheduling class (ioprio_set IOPRIO_CLASS_IDLE)")
	fs.IntVar(&c.workerCount, "worker_count", 4, "read workers per partition (a daemon with a control socket uses 1 unless set)")
	fs.StringVar(&c.fuseMount, "fuse_mount", "", "export every handler as the read-only file DIR/<misc> through FUSE instead of dm-user")
	fs.StringVar(&c.dmUserDir, "dm_user_dir", "/dev/dm-user", "directory of dm-user control nodes")
	fs.StringVar(&c.allowUID, "allow_uid", "", "comma-separated uids besides root allowed on the control socket")
	fs.StringVar(&c.aliveFile, "daemon_alive_indicator", "/metadata/ota/daemon-alive-indicator", "with -no_socket: file set to \"1\" once every handler runs (init waits for it at the SELinux transition); skipped when its directory is missing")
	fs.BoolVar(&c.verbose, "v", false, "debug logging")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: snapuserd [flags] [misc,cow,backing,base ...]\n\n"+
			"Serves Android userspace snapshots (AOSP snapuserd compatible).\n\n"+
			"examples:\n"+
			"  snapuserd -socket /tmp/snapuserd.sock -fuse_mount /mnt/snap     # any Linux host; drive it with snapshotctl\n"+
			"  snapuserd -socket snapuserd                                     # on a device: /dev/socket/snapuserd, /dev/dm-user\n"+
			"  snapuserd -no_socket -fuse_mount /mnt/snap system,system.cow,base.img,base.img\n"+
			"  snapuserd -socket_handoff                                       # snapuserd_proxy at the SELinux transition\n\n"+
			"See docs/OPERATIONS.md for the control protocol, failure modes and recovery.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(normalize(args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, flag.ErrHelp
		}
		return nil, errUsage
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "worker_count" {
			c.workerSet = true
		}
	})
	c.positional = fs.Args()
	if !c.noSocket && len(c.positional) > 0 {
		fmt.Fprintln(stderr, "snapuserd: positional init arguments need -no_socket")
		return nil, errUsage
	}
	if c.mergeThreads < 1 {
		fmt.Fprintln(stderr, "snapuserd: -num_merge_threads must be ≥ 1")
		return nil, errUsage
	}
	if c.cowOpMerge < 0 {
		fmt.Fprintln(stderr, "snapuserd: -cow_op_merge_size must be ≥ 0")
		return nil, errUsage
	}
	if c.workerCount < 1 {
		fmt.Fprintln(stderr, "snapuserd: -worker_count must be ≥ 1")
		return nil, errUsage
	}
	return c, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if c.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	return serve(ctx, c, log, stdout)
}

func serve(ctx context.Context, c *config, log *slog.Logger, stdout io.Writer) error {
	if c.socketHandoff {
		return handoff(ctx, c, log)
	}
	workers := c.workerCount
	if !c.noSocket && !c.workerSet {
		workers = 1 // AOSP: 1 read worker whenever the daemon owns a control socket
	}

	var fe snapuserd.Frontend
	stopCancels := false
	if testFrontend != nil {
		fe = testFrontend
	} else if c.fuseMount != "" {
		exp, err := fuse.Mount(c.fuseMount, &fuse.Options{Logger: log})
		if err != nil {
			return err
		}
		defer func() {
			if err := exp.Unmount(); err != nil {
				log.Error("fuse unmount", "dir", c.fuseMount, "err", err)
			}
		}()
		fe = &snapuserd.Fuse{Export: exp}
		stopCancels = true
		log.Info("FUSE export mounted", "dir", c.fuseMount)
	} else {
		fe = &snapuserd.DmUser{Dir: c.dmUserDir, Workers: workers, Logger: log}
	}
	opts := &snapuserd.SnapshotOptions{ODirect: c.oDirect}
	mgr := snapuserd.NewManager(snapuserd.Config{
		Frontend:    fe,
		Open:        opener(c, opts),
		Logger:      log,
		StopCancels: stopCancels,
		// The -no_socket daemon is the second-stage boot daemon: it
		// verifies every partition in the background from the start
		// (snapuserd.md §8), reading /dev/block/mapper/<misc> with
		// O_DIRECT when that node exists.
		VerifyOnStart: c.noSocket,
		VerifyDevice:  mapperDevice,
		Merge: snapuserd.MergeConfig{
			Threads:   c.mergeThreads,
			Nice:      c.mergeNice,
			IdleIO:    c.mergeIOIdle,
			IOUring:   c.ioUring,
			MergeSize: c.cowOpMerge,
		},
	})
	defer mgr.Shutdown()

	if c.noSocket {
		for _, a := range c.positional {
			parts := strings.Split(a, ",")
			var req proto.InitRequest
			switch len(parts) {
			case 4:
				req = proto.InitRequest{Misc: parts[0], Cow: parts[1], Backing: parts[2], BasePath: parts[3]}
			case 3:
				req = proto.InitRequest{Misc: parts[0], Cow: parts[1], Backing: parts[2], Legacy: true}
			default:
				return fmt.Errorf("bad init argument %q: want misc,cow,backing,base (or misc,cow,backing for legacy mode)", a)
			}
			n, err := mgr.InitHandler(req)
			if err != nil {
				return fmt.Errorf("init %s: %w", req.Misc, err)
			}
			if err := mgr.StartHandler(req.Misc); err != nil {
				return fmt.Errorf("start %s: %w", req.Misc, err)
			}
			log.Info("handler started", "misc", req.Misc, "sectors", n)
		}
		writeAliveIndicator(c.aliveFile, log)
		// WaitForSocket: once a snapuserd_proxy appears (second-stage init
		// starts snapuserd -socket_handoff), take over the control socket.
		proxyPath := proto.ProxyPath(c.socket)
		hctx, hcancel := context.WithCancel(ctx)
		defer hcancel()
		lnc := make(chan net.Listener, 1)
		go func() {
			ln, err := proto.ReceiveHandoff(hctx, proxyPath)
			if err != nil {
				if hctx.Err() == nil {
					log.Error("socket hand-off failed", "proxy", proxyPath, "err", err)
				}
				return
			}
			lnc <- ln
		}()
		done := make(chan struct{})
		go func() { mgr.Wait(); close(done) }()
		select {
		case <-ctx.Done():
			return nil
		case <-done:
			return nil
		case ln := <-lnc:
			log.Info("control socket received through hand-off", "proxy", proxyPath)
			return runControl(ctx, ln, mgr, c, log, stopCancels)
		}
	}

	ln, err := proto.Listen(c.socket)
	if err != nil {
		return err
	}
	log.Info("control socket ready", "addr", ln.Addr().String(), "frontend", fe.Name(), "workers", workers)
	return runControl(ctx, ln, mgr, c, log, stopCancels)
}

// opener picks the handler for an init request as AOSP's daemon picks its
// mode: the 4-field (legacy, Android 12) form is served as a dm-snapshot
// exception store (snapuserd/legacy) unless -user_snapshot forces
// userspace snapshots; the 5-field form always uses userspace snapshots.
func opener(c *config, opts *snapuserd.SnapshotOptions) snapuserd.Opener {
	return func(req proto.InitRequest) (snapuserd.Device, error) {
		if !req.Legacy {
			return snapuserd.OpenSnapshot(req, opts)
		}
		if c.userSnapshot {
			return nil, fmt.Errorf("legacy init of %s (misc,cow,backing) refused: -user_snapshot forces userspace snapshots (init,misc,cow,backing,base_path_merge)", req.Misc)
		}
		return legacy.Open(req, nil)
	}
}

func allowedUIDs(c *config) ([]int, error) {
	var allow []int
	if c.allowUID == "" {
		return nil, nil
	}
	for _, s := range strings.Split(c.allowUID, ",") {
		u, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("-allow_uid: %q is not a uid", s)
		}
		allow = append(allow, u)
	}
	return allow, nil
}

// runControl serves the control protocol on ln until stop/detach or ctx.
func runControl(ctx context.Context, ln net.Listener, mgr *snapuserd.Manager, c *config, log *slog.Logger, stopCancels bool) error {
	allow, err := allowedUIDs(c)
	if err != nil {
		ln.Close()
		return err
	}
	srv := proto.NewServer(mgr, &proto.Options{AllowUIDs: allow, Logger: log})
	if err := srv.Run(ctx, ln); err != nil {
		return err
	}
	if ctx.Err() == nil && !stopCancels {
		// detach/stop: exit once every handler finished (their dm-user
		// devices are gone).
		mgr.Wait()
	}
	return nil
}

// handoff is snapuserd -socket_handoff (service snapuserd_proxy): hand the
// control socket's listening fd to the daemon started at the SELinux
// transition, then exit.
func handoff(ctx context.Context, c *config, log *slog.Logger) error {
	ln, err := proto.Listen(c.socket)
	if err != nil {
		return err
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return errors.New("-socket_handoff: control socket is not a Unix listener")
	}
	ul.SetUnlinkOnClose(false) // the path stays for the daemon that takes over
	defer ul.Close()
	proxyPath := proto.ProxyPath(c.socket)
	proxy, err := proto.ListenProxy(proxyPath)
	if err != nil {
		return err
	}
	defer proxy.Close()
	log.Info("snapuserd_proxy ready", "proxy", proxyPath)
	return proto.ServeHandoff(ctx, proxy, ul)
}

// writeAliveIndicator writes "1" to the daemon-alive indicator (AOSP: plain
// write, no fsync; only its existence matters). A missing directory (no
// /metadata/ota on a Linux host) skips it.
func writeAliveIndicator(path string, log *slog.Logger) {
	if path == "" {
		return
	}
	if _, err := os.Stat(filepath.Dir(path)); err != nil {
		log.Debug("daemon-alive indicator skipped", "path", path, "err", err)
		return
	}
	if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
		log.Error("daemon-alive indicator", "path", path, "err", err)
		return
	}
	log.Info("daemon-alive indicator written", "path", path)
}

// mapperDevice is the partition's device-mapper node for update-verify, or
// "" (verify through the handler's read path) when there is none.
func mapperDevice(misc string) string {
	p := "/dev/block/mapper/" + misc
	if fi, err := os.Stat(p); err == nil && fi.Mode()&os.ModeDevice != 0 {
		return p
	}
	return ""
}
