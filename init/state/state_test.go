package state

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMarshalKnownBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  []byte
		want string // hex, worked out by hand from the proto field numbers
	}{
		{"none is empty", (&UpdateStatus{}).Marshal(), ""},
		{"initiated", (&UpdateStatus{State: Initiated, SourceBuildFingerprint: "fp"}).Marshal(), "0801" + "42026670"},
		{"merging", (&UpdateStatus{State: Merging, UsingSnapuserd: true, MergePhase: SecondPhase, UserspaceSnapshots: true, CowOpMergeSize: 300}).Marshal(),
			"0803" + "2801" + "3002" + "4801" + "68ac02"},
		{"merge failed", (&UpdateStatus{State: MergeFailed, MergeFailureCode: FailUnknownTargetType, NumWorkerThreads: 3}).Marshal(), "0806" + "3809" + "7003"},
		{"snapshot", (&SnapshotStatus{Name: "system_b", State: SnapshotCreated, DeviceSize: 8 << 20, SnapshotSize: 8 << 20,
			CowFileSize: 4096, UsingSnapuserd: true, OldPartitionSize: 8 << 20, CompressionAlgorithm: "lz4", ReadAheadSize: 32, NumVerifyThreads: 2}).Marshal(),
			"0a0873797374656d5f62" + "1001" + "1880808004" + "2080808004" + "308020" + "4801" + "5080808004" + "5a036c7a34" + "880120" + "a00102"},
	} {
		if h := hex.EncodeToString(tc.got); h != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, h, tc.want)
		}
	}
}

func TestRoundTripAndUnknownFields(t *testing.T) {
	s := SnapshotStatus{Name: "vendor_b", State: SnapshotMergeCompleted, DeviceSize: 1 << 30, SnapshotSize: 1 << 30, CowPartitionSize: 1 << 20,
		CowFileSize: 2 << 20, SectorsAllocated: 7, MetadataSectors: 8, UsingSnapuserd: true, OldPartitionSize: 5, CompressionAlgorithm: "gz,9",
		EstimatedCowSize: 9, EnableThreading: true, BatchedWrites: true, EstimatedOpsBufferSize: 10, CompressionFactor: 65536, ReadAheadSize: 32,
		VerifyBlockSize: 4096, NumVerifyThreads: 2}
	b := s.Marshal()
	// Unknown fields of every wire type (reserved 18 as varint, 99 as fixed64,
	// 100 as bytes, 101 as fixed32) must be skipped.
	b = append(b, 0x90, 0x01, 0x05, 0x99, 0x06, 1, 2, 3, 4, 5, 6, 7, 8, 0xa2, 0x06, 0x01, 'x', 0xad, 0x06, 1, 2, 3, 4)
	got, err := UnmarshalSnapshotStatus(b)
	if err != nil || !reflect.DeepEqual(got, s) {
		t.Fatalf("got %+v, %v; want %+v", got, err, s)
	}
	u := UpdateStatus{State: Merging, SectorsAllocated: 1, TotalSectors: 2, MetadataSectors: 3, UsingSnapuserd: true, MergePhase: FirstPhase,
		MergeFailureCode: 5, SourceBuildFingerprint: "a/b:1", UserspaceSnapshots: true, IOUringEnabled: true, LegacySnapuserd: true, ODirect: true,
		CowOpMergeSize: 4, NumWorkerThreads: 5}
	gu, err := UnmarshalUpdateStatus(u.Marshal())
	if err != nil || !reflect.DeepEqual(gu, u) {
		t.Fatalf("got %+v, %v; want %+v", gu, err, u)
	}
}

func TestBadInput(t *testing.T) {
	for _, b := range [][]byte{
		{0x0a, 0x05, 'a'},        // string length past the end
		{0x10},                   // varint missing
		{0x0a, 0x02, 0xff, 0xfe}, // name not UTF-8
		{0x07},                   // wire type 7
	} {
		if _, err := UnmarshalSnapshotStatus(b); !errors.Is(err, ErrFormat) {
			t.Errorf("% x: err %v, want ErrFormat", b, err)
		}
	}
}

func TestLegacyText(t *testing.T) {
	for txt, want := range map[string]UpdateState{"merging": Merging, "merge-needs-reboot": MergeNeedsReboot, "unverified": Unverified,
		"": None, "bogus text": None, "cancelled": Cancelled} {
		got, err := UnmarshalUpdateStatus([]byte(txt))
		if err != nil || got.State != want {
			t.Errorf("%q: got %v, %v; want %v", txt, got.State, err, want)
		}
	}
}

func TestDirLifecycle(t *testing.T) {
	d := Dir{Path: filepath.Join(t.TempDir(), "ota")}
	if err := d.Ensure(); err != nil {
		t.Fatal(err)
	}
	if s, err := d.ReadUpdateStatus(); err != nil || s.State != None {
		t.Fatalf("missing state: %v %v", s, err)
	}
	// Writers refuse without LOCK_EX.
	sh, err := d.Lock(false)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WriteUpdateState(sh, Initiated, 0); !errors.Is(err, ErrNotExclusive) {
		t.Fatalf("write under LOCK_SH: %v", err)
	}
	sh.Unlock()

	l, err := d.Lock(true)
	if err != nil {
		t.Fatal(err)
	}
	// The lock is a flock on the directory: another open file description
	// cannot take it while we hold it.
	fd, err := unix.Open(d.Path, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB); err != unix.EWOULDBLOCK {
		t.Fatalf("second flock while held: %v", err)
	}
	unix.Close(fd)

	full := UpdateStatus{State: Initiated, SourceBuildFingerprint: "old/fp", UsingSnapuserd: true, UserspaceSnapshots: true, CowOpMergeSize: 7,
		TotalSectors: 99}
	if err := d.WriteUpdateStatus(l, full); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"vendor_b", "system_b", "odm_b", "product_b"} {
		if err := d.WriteSnapshot(l, SnapshotStatus{Name: n, State: SnapshotCreated, DeviceSize: 4096}); err != nil {
			t.Fatal(err)
		}
	}
	names, err := d.ListSnapshots()
	if err != nil || !reflect.DeepEqual(names, []string{"product_b", "system_b", "odm_b", "vendor_b"}) {
		t.Fatalf("list: %v %v", names, err)
	}
	// Propagation: Unverified keeps 5, 6, 8–14 and drops 2–4; MergeFailed
	// adds the code; None is 0 bytes.
	if err := d.WriteUpdateState(l, Unverified, FailReadStatus); err != nil {
		t.Fatal(err)
	}
	got, _ := d.ReadUpdateStatus()
	want := UpdateStatus{State: Unverified, SourceBuildFingerprint: "old/fp", UsingSnapuserd: true, UserspaceSnapshots: true, CowOpMergeSize: 7}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after Unverified: %+v", got)
	}
	if err := d.WriteUpdateState(l, MergeFailed, FailUnknownTable); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.ReadUpdateStatus(); got.MergeFailureCode != FailUnknownTable || got.CowOpMergeSize != 7 {
		t.Fatalf("after MergeFailed: %+v", got)
	}
	if err := d.WriteAtomic(l, SnapshotBoot, []byte("_a")); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteIndicator(RollbackIndicator); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.SnapshotPath("system_b")+".tmp", []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveAllUpdateState(l); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Join(d.Path, SnapshotsDir))
	if len(ents) != 0 || d.Exists(SnapshotBoot) || d.Exists(RollbackIndicator) {
		t.Fatalf("left behind: %v", ents)
	}
	if b, err := os.ReadFile(filepath.Join(d.Path, StateFile)); err != nil || len(b) != 0 {
		t.Fatalf("state after RemoveAllUpdateState: %q %v (want 0 bytes)", b, err)
	}
	if _, err := os.Stat(filepath.Join(d.Path, StateFile+".tmp")); err == nil {
		t.Fatal("state.tmp left behind")
	}
	l.Unlock()
	if err := d.WriteSnapshot(&Lock{exclusive: true}, SnapshotStatus{Name: "../x"}); err == nil {
		t.Fatal("bad name accepted")
	}
}

// crashFS models a file system where file data is durable only after
// syncFile and directory entries only after syncDir; crash() returns what
// survives a power cut.
type crashFS struct {
	vol, dur map[string]*inode
	drop     string // op name to skip (mutation check of the test itself)
	stopAt   int    // crash after this many ops (-1: never)
	n        int
}

type inode struct{ vol, dur []byte }

var errCrash = errors.New("power cut")

func (c *crashFS) step(op string) (skip bool, err error) {
	if c.stopAt >= 0 && c.n >= c.stopAt {
		return true, errCrash
	}
	c.n++
	return op == c.drop, nil
}

func (c *crashFS) writeFile(p string, data []byte) error {
	if _, err := c.step("write"); err != nil {
		return err
	}
	in := c.vol[p]
	if in == nil {
		in = &inode{}
		c.vol[p] = in
	}
	in.vol = append([]byte(nil), data...)
	return nil
}

func (c *crashFS) syncFile(p string) error {
	skip, err := c.step("fsync")
	if err != nil || skip {
		return err
	}
	c.vol[p].dur = c.vol[p].vol
	return nil
}

func (c *crashFS) rename(from, to string) error {
	if _, err := c.step("rename"); err != nil {
		return err
	}
	c.vol[to] = c.vol[from]
	delete(c.vol, from)
	return nil
}

func (c *crashFS) syncDir(string) error {
	skip, err := c.step("fsyncdir")
	if err != nil || skip {
		return err
	}
	c.dur = map[string]*inode{}
	for k, v := range c.vol {
		c.dur[k] = v
	}
	return nil
}

func (c *crashFS) survivor(p string) ([]byte, bool) {
	in := c.dur[p]
	if in == nil {
		return nil, false
	}
	return in.dur, true
}

// atomicViolations returns the problems found crashing an atomic
// replacement of "old" by "new" after every step.
func atomicViolations(drop string) []string {
	var bad []string
	for stop := 0; stop <= 5; stop++ {
		old := &inode{vol: []byte("old"), dur: []byte("old")}
		c := &crashFS{vol: map[string]*inode{"/d/state": old}, dur: map[string]*inode{"/d/state": old}, drop: drop, stopAt: stop}
		if stop == 5 {
			c.stopAt = -1
		}
		err := writeFileAtomic(c, "/d/state", []byte("new"))
		got, ok := c.survivor("/d/state")
		switch {
		case !ok || (!bytes.Equal(got, []byte("old")) && !bytes.Equal(got, []byte("new"))):
			bad = append(bad, "torn state after a cut at step "+string(rune('0'+stop))+": "+string(got))
		case err == nil && !bytes.Equal(got, []byte("new")):
			bad = append(bad, "write returned success but the cut lost it")
		}
	}
	return bad
}

func TestAtomicWriteSurvivesPowerCut(t *testing.T) {
	if v := atomicViolations(""); len(v) > 0 {
		t.Fatal(v)
	}
	// The model must catch a missing fsync of either kind.
	for _, drop := range []string{"fsync", "fsyncdir"} {
		if v := atomicViolations(drop); len(v) == 0 {
			t.Errorf("crash model did not notice a write without %s", drop)
		}
	}
}
