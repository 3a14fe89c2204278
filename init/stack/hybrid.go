package stack

// The hybrid table of a snapshotted partition (snapuserd/hybrid.go): instead of AOSP's
// single dm-user target, <P> gets dm-linear segments onto <P>-base (blocks the COW leaves
// unchanged, ops already merged) and onto <P>-src (Copy ops, only while no merge runs),
// dm-zero for Zero ops, and dm-user segments for the rest. Off by default
// (Builder.Hybrid; vabc-init turns it on with VABC_HYBRID_TABLE=1 or vabc.hybrid=1).
//
// Invariant kept here (see snapuserd/hybrid.go): MapSnapshot builds the idle plan, valid
// while no merge writes the base; PrepareMerge replaces it by the merging plan and must
// run before every initiate_merge (a fresh merge and a merge resumed after a reboot);
// Replan may run at any time during the merge; Collapse ends it. Retarget keeps the
// segments and renames only the dm-user ones. The device is read-only: the daemon
// refuses writes, a linear segment would pass them to the base.

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/vabc-go/vabc/kernel/dm"
	"github.com/vabc-go/vabc/snapuserd"
)

// HybridMinBlocks: kernel-served runs shorter than this many blocks go to the daemon, to
// keep the table short.
const HybridMinBlocks = 16

// hybridPlan plans <P>'s table from the COW as committed now. The linear targets name
// base and src as major:minor, as the kernel reports them in the live table.
func hybridPlan(cow, base, src, misc string, sectors uint64, phase snapuserd.HybridPhase) ([]dm.Target, error) {
	segs, err := snapuserd.PlanHybridFile(cow, sectors, phase, HybridMinBlocks)
	if err != nil {
		return nil, fmt.Errorf("stack: hybrid table: %w", err)
	}
	bd, err := devNumber(base)
	if err != nil {
		return nil, err
	}
	sd, err := devNumber(src)
	if err != nil {
		return nil, err
	}
	return snapuserd.HybridTargets(segs, misc, bd, sd), nil
}

// devNumber returns "major:minor" of a block device node.
func devNumber(path string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", fmt.Errorf("stack: hybrid table: %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", fmt.Errorf("stack: hybrid table: %s is not a block device", path)
	}
	return fmt.Sprintf("%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))), nil
}

// IsHybrid reports whether a live table is a hybrid one: more than one target, or one
// that is not dm-user, with at least one dm-user target.
func IsHybrid(ts []dm.Target) bool {
	return len(ts) > 1 && hasUser(ts)
}

func hasUser(ts []dm.Target) bool {
	for _, t := range ts {
		if t.Type == "user" {
			return true
		}
	}
	return false
}

// userMisc returns the misc name of the table's dm-user targets.
func userMisc(name string, ts []dm.Target) (string, error) {
	for _, t := range ts {
		if t.Type == "user" {
			f := strings.Fields(t.Params)
			if len(f) != 3 {
				return "", fmt.Errorf("stack: %s: dm-user target %q: want <offset> <length> <misc>", name, t.Params)
			}
			return f[2], nil
		}
	}
	return "", fmt.Errorf("stack: %s has no dm-user target", name)
}

// withMisc returns ts with every dm-user target on misc.
func withMisc(ts []dm.Target, misc string) []dm.Target {
	out := make([]dm.Target, len(ts))
	for i, t := range ts {
		if t.Type == "user" {
			f := strings.Fields(t.Params)
			t.Params = fmt.Sprintf("%d %d %s", t.Start, t.Length, misc)
			if len(f) == 3 { // keep the offset the daemon is sent
				t.Params = f[0] + " " + f[1] + " " + misc
			}
		}
		out[i] = t
	}
	return out
}

var readOnly = &dm.LoadOptions{ReadOnly: true}

// replanHybrid reloads <P>'s hybrid table with the plan of phase; a table that is not
// hybrid (AOSP's single dm-user target, or already collapsed) is left alone.
func (b *Builder) replanHybrid(name string, sectors uint64, phase snapuserd.HybridPhase) (bool, error) {
	if b.C == nil {
		return false, nil // no device-mapper (host tools, tests): no table to reload
	}
	cur, err := b.C.Table(name)
	if err != nil {
		return false, err
	}
	if !IsHybrid(cur) {
		return false, nil
	}
	misc, err := userMisc(name, cur)
	if err != nil {
		return false, err
	}
	base, err := b.DevPath(BaseName(name))
	if err != nil {
		return false, fmt.Errorf("stack: hybrid %s: %w", name, err)
	}
	src := base
	if b.Exists(SrcName(name)) == nil {
		if src, err = b.DevPath(SrcName(name)); err != nil {
			return false, fmt.Errorf("stack: hybrid %s: %w", name, err)
		}
	}
	cow, err := b.DevPath(CowImageName(name))
	if err != nil {
		return false, fmt.Errorf("stack: hybrid %s: %w", name, err)
	}
	ts, err := hybridPlan(cow, base, src, misc, sectors, phase)
	if err != nil {
		return false, err
	}
	if equalTargets(ts, cur) {
		return true, nil
	}
	if err := b.C.ReloadWith(name, ts, readOnly); err != nil {
		return false, fmt.Errorf("stack: reload %s to the %v hybrid plan: %w", name, phase, err)
	}
	b.logf("hybrid table reloaded", "partition", name, "phase", phase.String(), "targets", len(ts))
	return true, nil
}

func equalTargets(a, b []dm.Target) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Start != b[i].Start || a[i].Length != b[i].Length || a[i].Type != b[i].Type ||
			strings.Join(strings.Fields(a[i].Params), " ") != strings.Join(strings.Fields(b[i].Params), " ") {
			return false
		}
	}
	return true
}

// PrepareMerge must run before initiate_merge is sent for <P>: a hybrid table is
// reloaded with the merging plan (no segment the merge writes is served by the kernel).
// Tables that are not hybrid are left alone.
func (b *Builder) PrepareMerge(name string, sectors uint64) error {
	_, err := b.replanHybrid(name, sectors, snapuserd.HybridMerging)
	return err
}

// Replan reloads a hybrid <P> during its merge with the merging plan of the COW's
// committed num_merge_ops (merged blocks move from the daemon to <P>-base).
func (b *Builder) Replan(name string, sectors uint64) error {
	_, err := b.replanHybrid(name, sectors, snapuserd.HybridMerging)
	return err
}
