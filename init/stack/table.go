// Package stack plans and builds the device-mapper stacks of first-stage
// init in userspace-snapshot mode (snapshot-lifecycle.md §4.3–§4.5):
// <P>-base, <P>-cow-img, <P>-src and the dm-user device <P>, the plain
// dm-linear partitions, the collapse of <P> back to dm-linear after a merge,
// and the teardown.
//
// The super partition's liblp metadata is replaced by a profile partition
// table (§7.3): one line per extent, "<name> <disk> <start sector>
// <sectors>", names without slot suffix. The layout is in place (§7.2): both
// slot names of a partition resolve to the same sectors, so <P>-base and
// <P>-src cover the same blocks and the merge overwrites source data. The
// libfiemap COW image /data/gsi/ota/<P>-cow-img.img is attached through a
// loop device instead of its physical extents; <P>-cow-img is a dm-linear
// over that loop device, exactly cow_file_size long.
package stack

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
)

// Extent is a sector range of a disk.
type Extent struct {
	Disk    string
	Start   uint64 // sector
	Sectors uint64
}

// Partition is one entry of the profile table.
type Partition struct {
	Name    string // without slot suffix
	Extents []Extent
}

// Sectors is the partition's length.
func (p Partition) Sectors() uint64 {
	var n uint64
	for _, e := range p.Extents {
		n += e.Sectors
	}
	return n
}

// Table is the profile partition table.
type Table []Partition

// maxExtents bounds a table read from disk.
const maxExtents = 1024

// ParseTable reads the profile table. Blank lines and #-comments are
// skipped; errors name the line.
func ParseTable(text string) (Table, error) {
	var t Table
	idx := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(text))
	line, n := 0, 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		f := strings.Fields(s)
		if len(f) != 4 {
			return nil, fmt.Errorf("partition table line %d: %q: want <name> <disk> <start> <sectors>", line, s)
		}
		start, err1 := strconv.ParseUint(f[2], 10, 64)
		secs, err2 := strconv.ParseUint(f[3], 10, 64)
		if err1 != nil || err2 != nil || secs == 0 || start+secs < start {
			return nil, fmt.Errorf("partition table line %d: bad range %s+%s", line, f[2], f[3])
		}
		if strings.ContainsAny(f[0], "/,") || strings.HasSuffix(f[0], "_a") || strings.HasSuffix(f[0], "_b") {
			return nil, fmt.Errorf("partition table line %d: bad name %q (no slot suffix, no / or ,)", line, f[0])
		}
		if n++; n > maxExtents {
			return nil, fmt.Errorf("partition table line %d: more than %d extents", line, maxExtents)
		}
		i, ok := idx[f[0]]
		if !ok {
			i = len(t)
			idx[f[0]] = i
			t = append(t, Partition{Name: f[0]})
		}
		t[i].Extents = append(t[i].Extents, Extent{Disk: f[1], Start: start, Sectors: secs})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return t, nil
}

// Lookup finds a partition by its unsuffixed name.
func (t Table) Lookup(name string) (Partition, bool) {
	for _, p := range t {
		if p.Name == name {
			return p, true
		}
	}
	return Partition{}, false
}

// String formats the table as ParseTable reads it.
func (t Table) String() string {
	var b strings.Builder
	for _, p := range t {
		for _, e := range p.Extents {
			fmt.Fprintf(&b, "%s %s %d %d\n", p.Name, e.Disk, e.Start, e.Sectors)
		}
	}
	return b.String()
}
