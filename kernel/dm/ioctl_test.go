package dm

import (
	"encoding/binary"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRequestNumbers(t *testing.T) {
	for _, tc := range []struct {
		cmd  command
		want uint
	}{
		{cmdVersion, 0xc138fd00},
		{cmdDevCreate, 0xc138fd03},
		{cmdTableLoad, 0xc138fd09},
		{cmdListVersions, 0xc138fd0d},
	} {
		t.Run(tc.cmd.String(), func(t *testing.T) {
			if got := tc.cmd.request(); got != tc.want {
				t.Errorf("request = %#x, want %#x", got, tc.want)
			}
		})
	}
	if got := command(99).String(); got != "DM_IOCTL_99" {
		t.Errorf("unknown command name = %q", got)
	}
}

func TestEncodeRequestLayout(t *testing.T) {
	b, err := encodeRequest(&header{Name: "system_b", UUID: "u-1", Flags: FlagSuspend | FlagNoFlush,
		TargetCount: 2, EventNr: 7, Dev: 0x1234}, []byte("payload"), 0)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	checks := []struct {
		name string
		got  uint64
		want uint64
	}{
		{"len", uint64(len(b)), ioctlHeaderSize + 7},
		{"version[0]", uint64(le.Uint32(b[0:])), 4},
		{"data_size", uint64(le.Uint32(b[12:])), ioctlHeaderSize + 7},
		{"data_start", uint64(le.Uint32(b[16:])), 312},
		{"target_count", uint64(le.Uint32(b[20:])), 2},
		{"flags", uint64(le.Uint32(b[28:])), FlagSuspend | FlagNoFlush},
		{"event_nr", uint64(le.Uint32(b[32:])), 7},
		{"dev", le.Uint64(b[40:]), 0x1234},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	if got := cString(b[48:176]); got != "system_b" {
		t.Errorf("name = %q", got)
	}
	if got := cString(b[176:305]); got != "u-1" {
		t.Errorf("uuid = %q", got)
	}
	if string(b[312:]) != "payload" {
		t.Errorf("payload = %q", b[312:])
	}
	h, data, err := decodeHeader(b)
	if err != nil || h.Name != "system_b" || h.UUID != "u-1" || h.TargetCount != 2 || string(data) != "payload" {
		t.Errorf("decode = %+v %q %v", h, data, err)
	}
	big, _ := encodeRequest(&header{}, nil, 16<<10)
	if len(big) != 16<<10 || le.Uint32(big[12:]) != 16<<10 {
		t.Errorf("bufSize not honoured: len %d data_size %d", len(big), le.Uint32(big[12:]))
	}
}

func TestEncodeRequestErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    header
	}{
		{"long name", header{Name: strings.Repeat("n", 128)}},
		{"long uuid", header{UUID: strings.Repeat("u", 129)}},
		{"nul name", header{Name: "a\x00b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := encodeRequest(&tc.h, nil, 0); err == nil {
				t.Fatal("no error")
			}
		})
	}
	if _, _, err := decodeHeader(make([]byte, 100)); err == nil {
		t.Error("short reply decoded")
	}
}

// kernelTargets builds a TABLE_STATUS payload the way the kernel does: "next" is the
// offset from the start of the payload.
func kernelTargets(ts []Target) []byte {
	var out []byte
	for i, tg := range ts {
		spec := make([]byte, align8(targetSpecSize+len(tg.Params)+1))
		binary.LittleEndian.PutUint64(spec[0:], tg.Start)
		binary.LittleEndian.PutUint64(spec[8:], tg.Length)
		copy(spec[24:40], tg.Type)
		copy(spec[40:], tg.Params)
		if i < len(ts)-1 {
			binary.LittleEndian.PutUint32(spec[20:], uint32(len(out)+len(spec)))
		}
		out = append(out, spec...)
	}
	return out
}

func TestTargetsRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		ts   []Target
	}{
		{"one linear", []Target{Linear(0, 2048, "/dev/vda", 8)}},
		{"mixed", []Target{Zero(0, 8), Error(8, 16), User(24, 4096, "system_b-user-cow"),
			Snapshot(4120, 8, "/dev/vda", "/dev/vdb", true, 8)}},
		{"params 7 bytes", []Target{{Start: 0, Length: 1, Type: "x", Params: "1234567"}, Zero(1, 1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc, err := encodeTargets(tc.ts)
			if err != nil {
				t.Fatal(err)
			}
			if len(enc)%8 != 0 {
				t.Errorf("encoded length %d not 8-aligned", len(enc))
			}
			// Input direction: next is relative to the current spec.
			off := 0
			for i := range tc.ts {
				next := int(binary.LittleEndian.Uint32(enc[off+20:]))
				if i == len(tc.ts)-1 {
					if next != 0 {
						t.Errorf("last next = %d", next)
					}
					break
				}
				off += next
			}
			got, err := decodeTargets(kernelTargets(tc.ts), uint32(len(tc.ts)))
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if got[i] != tc.ts[i] {
					t.Errorf("target %d = %+v, want %+v", i, got[i], tc.ts[i])
				}
			}
		})
	}
}

func TestEncodeTargetsErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		t    Target
	}{
		{"empty type", Target{Length: 1}},
		{"long type", Target{Length: 1, Type: "0123456789abcdef"}},
		{"zero length", Target{Type: "zero"}},
		{"nul params", Target{Length: 1, Type: "linear", Params: "a\x00"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := encodeTargets([]Target{tc.t}); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestDecodeTargetsErrors(t *testing.T) {
	good := kernelTargets([]Target{Zero(0, 8), Zero(8, 8)})
	loop := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(loop[20:], 0) // next points back at itself
	for _, tc := range []struct {
		name  string
		data  []byte
		count uint32
	}{
		{"count too large", good, 100},
		{"truncated", good[:50], 2},
		{"no nul", append(append([]byte(nil), good[:40]...), 'x'), 1},
		{"non-advancing next", loop, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeTargets(tc.data, tc.count); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func nameListEntry(dev uint64, name string, eventNr uint32, last bool) []byte {
	size := align8(align8(12+len(name)+1) + 8)
	b := make([]byte, size)
	binary.LittleEndian.PutUint64(b[0:], dev)
	if !last {
		binary.LittleEndian.PutUint32(b[8:], uint32(size))
	}
	copy(b[12:], name)
	x := align8(12 + len(name) + 1)
	binary.LittleEndian.PutUint32(b[x:], eventNr)
	binary.LittleEndian.PutUint32(b[x+4:], nameListFlagHasUUID)
	return b
}

func TestDecodeNameList(t *testing.T) {
	var data []byte
	data = append(data, nameListEntry(unix.Mkdev(254, 0), "snap", 3, false)...)
	data = append(data, nameListEntry(unix.Mkdev(254, 1), "system_b-user-cow", 0, true)...)
	got, err := decodeNameList(data)
	if err != nil {
		t.Fatal(err)
	}
	want := []NameListEntry{
		{Name: "snap", Dev: unix.Mkdev(254, 0), EventNr: 3, HasUUID: true},
		{Name: "system_b-user-cow", Dev: unix.Mkdev(254, 1), HasUUID: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if l, err := decodeNameList(make([]byte, 16)); err != nil || l != nil {
		t.Errorf("empty list = %v, %v", l, err)
	}
	bad := nameListEntry(1, "x", 0, false)
	binary.LittleEndian.PutUint32(bad[8:], 4)
	if _, err := decodeNameList(bad); err == nil {
		t.Error("bad next accepted")
	}
}

func versionEntry(name string, v [3]uint32, last bool) []byte {
	size := align8(16 + len(name) + 1)
	b := make([]byte, size)
	if !last {
		binary.LittleEndian.PutUint32(b[0:], uint32(size))
	}
	for i := range v {
		binary.LittleEndian.PutUint32(b[4+4*i:], v[i])
	}
	copy(b[16:], name)
	return b
}

func TestDecodeVersions(t *testing.T) {
	data := append(versionEntry("user", [3]uint32{1, 0, 0}, false), versionEntry("snapshot-merge", [3]uint32{1, 5, 0}, true)...)
	got, err := decodeVersions(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].String() != "user v1.0.0" || got[1].String() != "snapshot-merge v1.5.0" {
		t.Errorf("got %v", got)
	}
	if _, err := decodeVersions(data[:20]); err == nil {
		t.Error("truncated list accepted")
	}
}

func TestParseSnapshotStatus(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    SnapshotStatus
		done    bool
		wantErr bool
	}{
		{in: "24/32768 16", want: SnapshotStatus{24, 32768, 16, false, false, false}},
		{in: "16/32768 16", want: SnapshotStatus{16, 32768, 16, false, false, false}, done: true},
		{in: " 131600/262144 528\n", want: SnapshotStatus{131600, 262144, 528, false, false, false}},
		{in: "Invalid", want: SnapshotStatus{Invalid: true}},
		{in: "Overflow", want: SnapshotStatus{Overflow: true}},
		{in: "Merge failed", want: SnapshotStatus{MergeFailed: true}},
		{in: "24/32768", wantErr: true},
		{in: "24-32768 16", wantErr: true},
		{in: "x/32768 16", wantErr: true},
		{in: "24/y 16", wantErr: true},
		{in: "24/32768 z", wantErr: true},
		{in: "8/32768 16", wantErr: true},
		{in: "40000/32768 16", wantErr: true},
		{in: "", wantErr: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSnapshotStatus(tc.in)
			if tc.wantErr {
				if !errors.Is(err, ErrSnapshotStatus) {
					t.Fatalf("err = %v, want ErrSnapshotStatus", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || got.MergeDone() != tc.done {
				t.Errorf("got %+v done=%v, want %+v done=%v", got, got.MergeDone(), tc.want, tc.done)
			}
		})
	}
}

func TestParseUserStatus(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    UserStatus
		wantErr bool
	}{
		{in: "4 0 ok", want: UserStatus{Channels: 4}},
		{in: "0 12 lost", want: UserStatus{Outstanding: 12, DaemonLost: true}},
		{in: "0 12", wantErr: true},
		{in: "a 1 ok", wantErr: true},
		{in: "1 b ok", wantErr: true},
		{in: "1 1 maybe", wantErr: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseUserStatus(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("got %+v, %v", got, err)
			}
		})
	}
}

func TestParseTable(t *testing.T) {
	ts, err := ParseTable("# comment\n0 2048 linear /dev/vda 0\n\n2048 8 zero\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []Target{Linear(0, 2048, "/dev/vda", 0), Zero(2048, 8)}
	if !reflect.DeepEqual(ts, want) {
		t.Errorf("got %+v", ts)
	}
	for _, bad := range []string{"0 8", "x 8 zero", "0 y zero"} {
		if _, err := ParseTable(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if s := User(0, 8, "m").String(); s != "0 8 user 0 8 m" {
		t.Errorf("user line = %q", s)
	}
	if s := SnapshotMerge(0, 8, "/dev/a", "/dev/b", true, 8).String(); s != "0 8 snapshot-merge /dev/a /dev/b P 8" {
		t.Errorf("merge line = %q", s)
	}
	if s := SnapshotOrigin(0, 8, "/dev/a").String(); s != "0 8 snapshot-origin /dev/a" {
		t.Errorf("origin line = %q", s)
	}
}

func TestPathError(t *testing.T) {
	c := &Control{path: ControlPath}
	err := c.pathErr(cmdTableLoad, "snap", unix.ENXIO)
	var pe *os.PathError
	if !errors.As(err, &pe) || pe.Op != "DM_TABLE_LOAD" || !errors.Is(err, unix.ENXIO) ||
		!strings.Contains(err.Error(), `device "snap"`) {
		t.Errorf("err = %v", err)
	}
	if _, err := MakeNode("../x", 1); err == nil {
		t.Error("MakeNode accepted a path")
	}
}
