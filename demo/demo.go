package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/snapuserd"
	"github.com/vabc-go/vabc/snapuserd/client"
	"github.com/vabc-go/vabc/snapuserd/merge"
	"github.com/vabc-go/vabc/snapuserd/proto"
	"github.com/vabc-go/vabc/testdata/imagegen"
)

type options struct {
	bin, work, frontend string
	keep                bool
	files               int
	seed                uint64
}

// partition is the one partition the demo updates.
const partition = "system"

type demo struct {
	o   options
	out io.Writer
	bin map[string]string // tool name → path

	work, oldDir, newDir, cowDir string
	payload, key, pub, base, cow string
	sock, mnt, dmDir             string
	oldImg, newImg               []byte
	imageKind                    string
	frontend                     string // "fuse" or "emulated", chosen in serve
	removeWork                   bool

	n       int // steps so far
	timings []timing
	facts   []fact

	daemon *daemon // the running snapuserd, if any
}

type timing struct {
	step string
	d    time.Duration
}

type fact struct{ name, value string }

func newDemo(o options, out io.Writer) (*demo, error) {
	d := &demo{o: o, out: out, bin: map[string]string{}}
	for _, name := range []string{"payload", "cowctl", "snapuserd", "snapshotctl"} {
		p, err := filepath.Abs(filepath.Join(o.bin, name))
		if err != nil {
			return nil, err
		}
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			return nil, fmt.Errorf("%s not found in -bin %s (run make build): %v", name, o.bin, err)
		}
		d.bin[name] = p
	}
	if o.work == "" {
		w, err := os.MkdirTemp("", "vabc-demo-")
		if err != nil {
			return nil, err
		}
		d.work, d.removeWork = w, !o.keep
	} else {
		if err := os.MkdirAll(o.work, 0o755); err != nil {
			return nil, err
		}
		d.work = o.work
	}
	d.oldDir = filepath.Join(d.work, "old")
	d.newDir = filepath.Join(d.work, "new")
	d.cowDir = filepath.Join(d.work, "cows")
	d.payload = filepath.Join(d.work, "payload.bin")
	d.key = filepath.Join(d.work, "ota_key.pem")
	d.pub = filepath.Join(d.work, "ota_key.pub.pem")
	d.base = filepath.Join(d.work, "base_"+partition+".img")
	d.cow = filepath.Join(d.cowDir, partition+".cow")
	// A short socket path: sun_path holds 108 bytes.
	d.sock = filepath.Join(d.work, "sud.sock")
	d.mnt = filepath.Join(d.work, "mnt")
	d.dmDir = filepath.Join(d.work, "dm-user")
	return d, nil
}

func (d *demo) cleanup() {
	if d.daemon != nil {
		d.daemon.kill()
		d.daemon = nil
	}
	unmount(d.mnt)
	if d.removeWork {
		os.RemoveAll(d.work)
	} else {
		fmt.Fprintf(d.out, "\nwork directory kept: %s\n", d.work)
	}
}

func (d *demo) printf(format string, a ...any) { fmt.Fprintf(d.out, "    "+format+"\n", a...) }

// step runs one numbered step, printing its title first and its time last.
func (d *demo) step(title string, fn func() error) error {
	d.n++
	fmt.Fprintf(d.out, "\n==> %d. %s\n", d.n, title)
	start := time.Now()
	err := fn()
	el := time.Since(start)
	d.timings = append(d.timings, timing{title, el})
	if err != nil {
		return fmt.Errorf("step %d (%s): %w", d.n, title, err)
	}
	d.printf("(%s)", round(el))
	return nil
}

func (d *demo) note(name, format string, a ...any) {
	d.facts = append(d.facts, fact{name, fmt.Sprintf(format, a...)})
}

// tool runs one of the built binaries, echoing the command line and up to
// maxLines lines of its output.
func (d *demo) tool(ctx context.Context, maxLines int, name string, args ...string) (string, error) {
	shown := make([]string, len(args))
	for i, a := range args {
		shown[i] = strings.ReplaceAll(a, d.work+"/", "")
	}
	fmt.Fprintf(d.out, "    $ %s %s\n", name, strings.Join(shown, " "))
	cmd := exec.CommandContext(ctx, d.bin[name], args...)
	cmd.Dir = d.work
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	out := buf.String()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	for i, l := range lines {
		if l == "" && len(lines) == 1 {
			break
		}
		if i == maxLines && err == nil {
			d.printf("  … (%d more lines)", len(lines)-i)
			break
		}
		d.printf("  %s", l)
	}
	if err != nil {
		return out, fmt.Errorf("%s %s: %w", name, strings.Join(shown, " "), err)
	}
	return out, nil
}

func (d *demo) run(ctx context.Context) error {
	total := time.Now()
	fmt.Fprintf(d.out, "vabc demo: an A/B OTA of the %q partition, from images to a merged, verified update\n", partition)
	fmt.Fprintf(d.out, "work directory: %s\n", d.work)
	steps := []struct {
		title string
		fn    func() error
	}{
		{"generate an old and a new system image", func() error { return d.images(ctx) }},
		{"build a signed incremental VABC payload (payload generate)", func() error { return d.generate(ctx) }},
		{"verify the payload: signature, manifest, every operation hash (payload verify)", func() error { return d.verify(ctx) }},
		{"install: write the COW a device writes from the payload (payload apply-cow)", func() error { return d.applyCOW(ctx) }},
		{"serve the snapshot (old base + COW = new system) through snapuserd", func() error { return d.serve(ctx) }},
		{"merge the COW into the base, SIGKILL snapuserd in the middle, restart, finish", func() error { return d.merge(ctx) }},
		{"check: merged base == new image", func() error { return d.checkBase() }},
	}
	for _, s := range steps {
		if err := d.step(s.title, s.fn); err != nil {
			return err
		}
	}
	d.report(time.Since(total))
	fmt.Fprintln(d.out, "\ndemo: OK — payload → COW → daemon → merge (killed and resumed) → verified")
	return nil
}

func (d *demo) images(ctx context.Context) error {
	var err error
	if ext4Tools() {
		d.imageKind = "ext4"
		d.printf("mkfs.ext4 -d: an ext4 tree of %d files, then the same tree with files edited, grown, removed and added", d.o.files)
		scratch := filepath.Join(d.work, "scratch")
		if err := os.MkdirAll(scratch, 0o755); err != nil {
			return err
		}
		d.oldImg, d.newImg, err = imagegen.Ext4Pair(ctx, scratch, d.o.seed, imagegen.Ext4Options{Files: d.o.files, Edits: max(3, d.o.files/16)})
		os.RemoveAll(scratch)
	} else {
		d.imageKind = "raw (mixed content)"
		d.printf("mkfs.ext4/debugfs not installed (make deps installs e2fsprogs): raw images of mixed content instead")
		d.oldImg, d.newImg, err = imagegen.Raw(imagegen.Mixed, d.o.seed, d.o.files*48)
	}
	if err != nil {
		return err
	}
	if err := imagegen.WritePair(d.work, partition, d.oldImg, d.newImg); err != nil {
		return err
	}
	changed := 0
	for i := 0; i+imagegen.BlockSize <= min(len(d.oldImg), len(d.newImg)); i += imagegen.BlockSize {
		if !bytes.Equal(d.oldImg[i:i+imagegen.BlockSize], d.newImg[i:i+imagegen.BlockSize]) {
			changed++
		}
	}
	blocks := len(d.newImg) / imagegen.BlockSize
	d.printf("old/%s.img  %s", partition, size(len(d.oldImg)))
	d.printf("new/%s.img  %s, %d of %d blocks differ from the old image at the same place", partition, size(len(d.newImg)), changed, blocks)
	d.note("images", "%s, old %s, new %s, %d of %d blocks changed in place", d.imageKind, size(len(d.oldImg)), size(len(d.newImg)), changed, blocks)
	return nil
}

// ext4Tools reports whether imagegen can build ext4 images here.
func ext4Tools() bool {
	for _, t := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(t); err != nil {
			return false
		}
	}
	return true
}

func (d *demo) generate(ctx context.Context) error {
	d.printf("an RSA-2048 release key (the build server's signing key)")
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	if err := os.WriteFile(d.key, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600); err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(d.pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return err
	}
	if _, err := d.tool(ctx, 12, "payload", "generate", "--source", d.oldDir, "--target", d.newDir, "-o", d.payload,
		"--key", d.key, "--vabc", "--cow-version", "3", "--vabc-compression", "lz4", "--compression-factor", "64K"); err != nil {
		return err
	}
	st, err := os.Stat(d.payload)
	if err != nil {
		return err
	}
	d.printf("payload.bin  %s (%.1f%% of the new image)", size(int(st.Size())), pct(st.Size(), len(d.newImg)))
	d.note("payload", "%s signed incremental, %.1f%% of the new image", size(int(st.Size())), pct(st.Size(), len(d.newImg)))
	return nil
}

func (d *demo) verify(ctx context.Context) error {
	_, err := d.tool(ctx, 10, "payload", "verify", "--key", d.pub, d.payload)
	return err
}

func (d *demo) applyCOW(ctx context.Context) error {
	d.printf("the device keeps running the old system; update_engine writes only the COW")
	if _, err := d.tool(ctx, 10, "payload", "apply-cow", "--old", d.oldDir, "-o", d.cowDir, d.payload); err != nil {
		return err
	}
	st, err := os.Stat(d.cow)
	if err != nil {
		return err
	}
	d.printf("cows/%s.cow  %s (%.1f%% of the new image)", partition, size(int(st.Size())), pct(st.Size(), len(d.newImg)))
	d.note("COW", "%s (v3, lz4, 64 KiB compression factor), %.1f%% of the new image", size(int(st.Size())), pct(st.Size(), len(d.newImg)))
	d.printf("what is in it: every op decompressed, the merge sequence checked")
	if _, err := d.tool(ctx, 14, "cowctl", "inspect", "--verify-merge-sequence", "--decompress", d.cow); err != nil {
		return err
	}
	// After the reboot the old slot's partition is the snapshot's base; on
	// a resized partition it has the new size.
	if err := os.WriteFile(d.base, d.oldImg, 0o644); err != nil {
		return err
	}
	return os.Truncate(d.base, int64(len(d.newImg)))
}

// fuseUsable says why the FUSE export cannot work here, or "".
func fuseUsable() string {
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Sprintf("cannot open /dev/fuse (%v)", err)
	}
	f.Close()
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			return "not root and fusermount3 is not installed (make deps installs fuse3)"
		}
	}
	return ""
}

func (d *demo) serve(ctx context.Context) error {
	mode := d.o.frontend
	if mode == "auto" {
		mode = "fuse"
		if why := fuseUsable(); why != "" {
			d.printf("FUSE: %s; using the in-process dm-user emulation", why)
			mode = "emulated"
		}
	}
	if mode == "fuse" {
		err := d.serveFuse(ctx)
		if err == nil || d.o.frontend == "fuse" {
			return err
		}
		d.printf("FUSE export failed (%v); using the in-process dm-user emulation instead", err)
		d.stopDaemon()
		unmount(d.mnt)
		mode = "emulated"
	}
	return d.serveEmulated()
}

// serveFuse starts `snapuserd -fuse_mount`, creates the snapshot over the
// control socket with snapshotctl and reads the exported file.
func (d *demo) serveFuse(ctx context.Context) error {
	d.frontend = "fuse"
	if err := os.MkdirAll(d.mnt, 0o755); err != nil {
		return err
	}
	if err := d.startDaemon(ctx, "-socket", d.sock, "-fuse_mount", d.mnt); err != nil {
		return err
	}
	if err := d.createSnapshot(ctx); err != nil {
		return err
	}
	exported := filepath.Join(d.mnt, partition)
	if err := waitFile(exported, int64(len(d.newImg)), d.daemon); err != nil {
		return err
	}
	d.printf("the updated system is the file mnt/%s (on a device: /dev/block/dm-N, a dm-user target)", partition)
	return d.readServed(exported, "FUSE")
}

func (d *demo) readServed(exported, how string) error {
	start := time.Now()
	got, err := os.ReadFile(exported)
	if err != nil {
		return fmt.Errorf("read %s: %w%s", exported, err, d.daemon.logTail())
	}
	el := time.Since(start)
	if err := sameImage(got, d.newImg); err != nil {
		return fmt.Errorf("served snapshot: %w", err)
	}
	d.printf("read %s through %s in %s (%.0f MiB/s): byte for byte the new image", size(len(got)), how, round(el), mibps(len(got), el))
	d.note("serve", "%s via %s, %.0f MiB/s cold read", size(len(got)), how, mibps(len(got), el))
	return nil
}

// serveEmulated serves the snapshot with snapuserd's handler inside this
// process: the kernel side of dm-user is the in-process emulation, so every
// read crosses the real dm-user byte protocol to snapuserd's read workers.
func (d *demo) serveEmulated() error {
	d.frontend = "emulated"
	d.printf("snapuserd's manager in this process, frontend: dm-user (emulated kernel side, the real dm-user message protocol)")
	fe := &snapuserd.EmulatedDmUser{Workers: 2}
	mgr := snapuserd.NewManager(snapuserd.Config{
		Frontend: fe,
		Open:     func(req proto.InitRequest) (snapuserd.Device, error) { return snapuserd.OpenSnapshot(req, nil) },
		Logger:   slog.New(slog.DiscardHandler),
	})
	defer mgr.Shutdown()
	req := proto.InitRequest{Misc: partition, Cow: d.cow, Backing: d.base, BasePath: d.base}
	sectors, err := mgr.InitHandler(req)
	if err != nil {
		return err
	}
	if err := mgr.StartHandler(partition); err != nil {
		return err
	}
	d.printf("initialized %s: %d sectors", partition, sectors)
	t := fe.Target(partition)
	if t == nil {
		return errors.New("the emulated dm-user target did not appear")
	}
	start := time.Now()
	got := make([]byte, t.Size())
	for off := int64(0); off < int64(len(got)); off += 1 << 20 {
		end := min(off+1<<20, int64(len(got)))
		if _, err := t.ReadAt(got[off:end], off); err != nil {
			return fmt.Errorf("read at %d: %w", off, err)
		}
	}
	el := time.Since(start)
	if err := sameImage(got, d.newImg); err != nil {
		return fmt.Errorf("served snapshot: %w", err)
	}
	d.printf("read %s through emulated dm-user in %s (%.0f MiB/s): byte for byte the new image", size(len(got)), round(el), mibps(len(got), el))
	d.note("serve", "%s via emulated dm-user, %.0f MiB/s", size(len(got)), mibps(len(got), el))
	return nil
}

// createSnapshot is what libsnapshot does at boot: init and start the
// handler over the control socket.
func (d *demo) createSnapshot(ctx context.Context) error {
	if _, err := d.tool(ctx, 4, "snapshotctl", "-socket", d.sock, "init", partition, d.cow, d.base, d.base); err != nil {
		return fmt.Errorf("%w%s", err, d.daemon.logTail())
	}
	if _, err := d.tool(ctx, 4, "snapshotctl", "-socket", d.sock, "start", partition); err != nil {
		return fmt.Errorf("%w%s", err, d.daemon.logTail())
	}
	return nil
}

// mergeDaemon starts the daemon the merge runs in: the FUSE export again, or
// for the emulated frontend, dm-user control nodes that are FIFOs (a merge
// does no I/O through the device, only init opens the node).
func (d *demo) mergeDaemon(ctx context.Context) error {
	if d.frontend == "fuse" {
		unmount(d.mnt) // a SIGKILLed FUSE daemon leaves its mount behind
		return d.startDaemon(ctx, "-socket", d.sock, "-fuse_mount", d.mnt)
	}
	if err := os.MkdirAll(d.dmDir, 0o755); err != nil {
		return err
	}
	node := filepath.Join(d.dmDir, partition)
	if _, err := os.Stat(node); err != nil {
		if err := syscall.Mkfifo(node, 0o600); err != nil {
			return err
		}
	}
	return d.startDaemon(ctx, "-socket", d.sock, "-dm_user_dir", d.dmDir)
}

func (d *demo) merge(ctx context.Context) error {
	if d.daemon == nil {
		if err := d.mergeDaemon(ctx); err != nil {
			return err
		}
		if err := d.createSnapshot(ctx); err != nil {
			return err
		}
	}
	c, err := client.Connect(ctx, d.sock, 10*time.Second)
	if err != nil {
		return err
	}
	defer func() { c.Close() }()
	start := time.Now()
	if _, err := d.tool(ctx, 4, "snapshotctl", "-socket", d.sock, "merge", partition); err != nil {
		return err
	}
	// Watch merge_percent and kill -9 the daemon as soon as the merge is
	// under way.
	var killedAt float64 = -1
	for killedAt < 0 {
		p, err := c.GetMergePercent()
		if err != nil {
			return fmt.Errorf("getmergepercent: %w%s", err, d.daemon.logTail())
		}
		switch {
		case p >= 100:
			d.printf("the merge finished (%s) before a kill could land; run with more -files to see one", round(time.Since(start)))
			killedAt = 100
		case p > 0:
			d.daemon.kill()
			d.daemon = nil
			killedAt = p
			d.printf("kill -9 snapuserd at merge_percent %.1f%% (%s into the merge)", p, round(time.Since(start)))
		default:
			time.Sleep(time.Millisecond)
		}
	}
	firstRun := time.Since(start)
	c.Close()
	if killedAt < 100 {
		if err := d.showMergeState(); err != nil {
			return err
		}
		d.printf("restart snapuserd and create the snapshot again, as after a reboot")
		if err := d.mergeDaemon(ctx); err != nil {
			return err
		}
		if err := d.createSnapshot(ctx); err != nil {
			return err
		}
		if d.frontend == "fuse" {
			exported := filepath.Join(d.mnt, partition)
			if err := waitFile(exported, int64(len(d.newImg)), d.daemon); err != nil {
				return err
			}
			got, err := os.ReadFile(exported)
			if err != nil {
				return err
			}
			if err := sameImage(got, d.newImg); err != nil {
				return fmt.Errorf("snapshot served over a half-merged base: %w", err)
			}
			d.printf("mnt/%s over the half-merged base is still byte for byte the new image", partition)
		}
		if _, err := d.tool(ctx, 4, "snapshotctl", "-socket", d.sock, "merge", partition); err != nil {
			return err
		}
	}
	resumed := time.Now()
	if _, err := d.tool(ctx, 4, "snapshotctl", "-socket", d.sock, "-interval", "20ms", "wait", partition); err != nil {
		return fmt.Errorf("%w%s", err, d.daemon.logTail())
	}
	if l := d.daemon.logLine("merge complete"); l != "" {
		if i := strings.Index(l, "msg="); i >= 0 {
			l = l[i:] // drop the time= and level= fields
		}
		d.printf("snapuserd log: %s", l)
	}
	if err := d.stopDaemon(); err != nil {
		return err
	}
	if killedAt < 100 {
		d.note("merge", "killed at %.1f%% after %s, resumed and finished in %s", killedAt, round(firstRun), round(time.Since(resumed)))
	} else {
		d.note("merge", "finished in %s without a kill", round(firstRun))
	}
	return nil
}

// showMergeState decodes the merge state the killed daemon left in the COW
// and compares the base with the old and new images block by block.
func (d *demo) showMergeState() error {
	b, err := os.ReadFile(d.cow)
	if err != nil {
		return err
	}
	r, err := cow.NewReader(bytes.NewReader(b), int64(len(b)), nil)
	if err != nil {
		return err
	}
	defer r.Close()
	st, err := merge.Check(bytes.NewReader(b), int64(len(b)), d.cow, r)
	if err != nil {
		return fmt.Errorf("merge state after SIGKILL: %w", err)
	}
	d.printf("on disk in the COW header: num_merge_ops %d of %d, read_ahead_state %d; next: %s",
		st.NumMergeOps, st.TotalOps, st.ReadAheadState, st.NextAction())
	base, err := os.ReadFile(d.base)
	if err != nil {
		return err
	}
	var asNew, asOld, blocks int
	for i := 0; i+imagegen.BlockSize <= len(base); i += imagegen.BlockSize {
		blk := base[i : i+imagegen.BlockSize]
		blocks++
		isNew := i+imagegen.BlockSize <= len(d.newImg) && bytes.Equal(blk, d.newImg[i:i+imagegen.BlockSize])
		isOld := i+imagegen.BlockSize <= len(d.oldImg) && bytes.Equal(blk, d.oldImg[i:i+imagegen.BlockSize])
		switch {
		case isNew && !isOld:
			asNew++
		case isOld && !isNew:
			asOld++
		}
	}
	d.printf("base image: %d blocks already hold the new data, %d still the old (of %d blocks)", asNew, asOld, blocks)
	d.printf("a picture of it (merged blocks pale; kept with -keep):")
	_, err = d.tool(context.Background(), 12, "cowctl", "map", "--png", filepath.Join(d.work, "merge-after-kill.png"), "--source", d.base, d.cow)
	return err
}

func (d *demo) checkBase() error {
	base, err := os.ReadFile(d.base)
	if err != nil {
		return err
	}
	if err := sameImage(base, d.newImg); err != nil {
		return fmt.Errorf("merged base: %w", err)
	}
	d.printf("base_%s.img == new/%s.img (%s, compared byte for byte)", partition, partition, size(len(base)))
	return nil
}

func (d *demo) report(total time.Duration) {
	fmt.Fprintf(d.out, "\n==> report\n")
	for _, f := range d.facts {
		fmt.Fprintf(d.out, "    %-8s %s\n", f.name, f.value)
	}
	fmt.Fprintf(d.out, "    timings:\n")
	for i, t := range d.timings {
		fmt.Fprintf(d.out, "      %d. %-9s %s\n", i+1, round(t.d), t.step)
	}
	fmt.Fprintf(d.out, "      total     %s\n", round(total))
}

// sameImage reports the first differing block, if any.
func sameImage(got, want []byte) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d bytes, want %d", len(got), len(want))
	}
	for i := 0; i < len(got); i += imagegen.BlockSize {
		end := min(i+imagegen.BlockSize, len(got))
		if !bytes.Equal(got[i:end], want[i:end]) {
			return fmt.Errorf("block %d (byte 0x%x) differs from the new image", i/imagegen.BlockSize, i)
		}
	}
	return nil
}

// waitFile waits until path exists with size bytes, or the daemon exits.
func waitFile(path string, size int64, dm *daemon) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		if st, err := os.Stat(path); err == nil && st.Size() == size {
			return nil
		}
		select {
		case <-dm.exited:
			return fmt.Errorf("snapuserd exited before exporting %s: %v%s", path, dm.err, dm.logTail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("snapuserd did not export %s with %d bytes within 20 s%s", path, size, dm.logTail())
		}
	}
}

// unmount removes a FUSE mount at dir if there is one (a daemon killed
// with SIGKILL cannot unmount its export).
func unmount(dir string) {
	if !mounted(dir) {
		return
	}
	if os.Geteuid() == 0 {
		if unix.Unmount(dir, unix.MNT_DETACH) == nil {
			return
		}
	}
	exec.Command("fusermount3", "-u", "-z", dir).Run()
}

// mounted reports whether dir is a mount point in this mount namespace.
func mounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// daemon is a running snapuserd process.
type daemon struct {
	cmd    *exec.Cmd
	log    syncBuffer
	exited chan struct{}
	err    error // set when exited is closed
}

func (d *demo) startDaemon(ctx context.Context, args ...string) error {
	if os.Geteuid() != 0 {
		// The control socket admits root only unless told otherwise.
		args = append(args, "-allow_uid", fmt.Sprint(os.Geteuid()))
	}
	shown := strings.ReplaceAll(strings.Join(args, " "), d.work+"/", "")
	fmt.Fprintf(d.out, "    $ snapuserd %s &\n", shown)
	dm := &daemon{exited: make(chan struct{})}
	dm.cmd = exec.Command(d.bin["snapuserd"], args...)
	dm.cmd.Dir = d.work
	dm.cmd.Stdout, dm.cmd.Stderr = &dm.log, &dm.log
	if err := dm.cmd.Start(); err != nil {
		return err
	}
	go func() { dm.err = dm.cmd.Wait(); close(dm.exited) }()
	d.daemon = dm
	c, err := client.Connect(ctx, d.sock, 10*time.Second)
	if err != nil {
		return fmt.Errorf("snapuserd control socket: %w%s", err, dm.logTail())
	}
	c.Close()
	d.printf("snapuserd pid %d: control socket %s ready", dm.cmd.Process.Pid, filepath.Base(d.sock))
	return nil
}

// stopDaemon ends the daemon with SIGTERM (a FUSE daemon unmounts its export).
func (d *demo) stopDaemon() error {
	dm := d.daemon
	if dm == nil {
		return nil
	}
	d.daemon = nil
	dm.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-dm.exited:
	case <-time.After(10 * time.Second):
		dm.kill()
		return fmt.Errorf("snapuserd did not exit within 10 s of SIGTERM%s", dm.logTail())
	}
	if dm.err != nil {
		return fmt.Errorf("snapuserd exit: %v%s", dm.err, dm.logTail())
	}
	return nil
}

func (dm *daemon) kill() {
	dm.cmd.Process.Signal(syscall.SIGKILL)
	<-dm.exited
}

func (dm *daemon) logTail() string {
	if dm == nil {
		return ""
	}
	s := strings.TrimRight(dm.log.String(), "\n")
	if lines := strings.Split(s, "\n"); len(lines) > 15 {
		s = strings.Join(lines[len(lines)-15:], "\n")
	}
	if s == "" {
		return ""
	}
	return "\nsnapuserd log:\n" + s
}

// logLine returns the last log line containing s, or "".
func (dm *daemon) logLine(s string) string {
	lines := strings.Split(dm.log.String(), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], s) {
			return strings.TrimSpace(lines[i])
		}
	}
	return ""
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func size(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func pct(a int64, b int) float64 { return 100 * float64(a) / float64(b) }

func mibps(n int, d time.Duration) float64 { return float64(n) / (1 << 20) / max(d.Seconds(), 1e-9) }

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond)
	}
	return d
}
