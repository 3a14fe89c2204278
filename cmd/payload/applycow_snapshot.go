package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/vabc-go/vabc/init/bootctl"
	"github.com/vabc-go/vabc/init/stack"
	"github.com/vabc-go/vabc/init/state"
	"github.com/vabc-go/vabc/init/update"
	"github.com/vabc-go/vabc/internal/cli"
	"github.com/vabc-go/vabc/update_engine/payload"
	"github.com/vabc-go/vabc/update_engine/vabc"
)

// snapshotState is apply-cow --snapshot-state: the on-device install path.
// The COWs become libsnapshot's COW images (<o>/<P>-cow-img.img, P = name +
// target suffix) and the snapshot state is written to the metadata
// directory as libsnapshot would: BeginUpdate before the COWs are written,
// then one CREATED SnapshotStatus per partition, then
// FinishedSnapshotWrites (snapshot-boot = the source suffix, state
// Unverified). Switching the active slot is the caller's (boot control).
type snapshotState struct {
	dir    string // metadata directory D
	target string // target slot suffix
	source string
	old    string // --old DIR: sizes of the source partitions
}

func (s *snapshotState) check() error {
	if _, err := bootctl.SlotOf(s.target); err != nil {
		return &cli.UsageError{Msg: fmt.Sprintf("apply-cow: --target-slot: %v", err)}
	}
	if s.source == "" {
		s.source = bootctl.Suffix(1 - must(bootctl.SlotOf(s.target)))
	}
	if _, err := bootctl.SlotOf(s.source); err != nil || s.source == s.target {
		return &cli.UsageError{Msg: fmt.Sprintf("apply-cow: --source-slot %q with target %q", s.source, s.target)}
	}
	return nil
}

func must(v int, _ error) int { return v }

func (s *snapshotState) begin() error {
	return update.Begin(state.Dir{Path: s.dir}, "")
}

// finish turns the written COWs into snapshot images and records them.
func (s *snapshotState) finish(p *payload.Payload, res []vabc.Result, outDir string) error {
	var snaps []state.SnapshotStatus
	for i := range res {
		r := &res[i]
		pu := p.Partition(r.Name)
		if pu == nil {
			return fmt.Errorf("apply-cow: partition %s not in the payload", r.Name)
		}
		name := r.Name + s.target
		img := stack.ImagePath(outDir, name)
		size, err := sealImage(r.Path, img)
		if err != nil {
			return err
		}
		r.Path, r.Size = img, size
		st := state.SnapshotStatus{
			Name:                   name,
			DeviceSize:             pu.GetNewPartitionInfo().GetSize(),
			SnapshotSize:           pu.GetNewPartitionInfo().GetSize(),
			CowFileSize:            uint64(size),
			UsingSnapuserd:         true,
			CompressionAlgorithm:   r.Compression,
			EstimatedCowSize:       pu.GetEstimateCowSize(),
			EstimatedOpsBufferSize: pu.GetEstimateOpCountMax(),
			CompressionFactor:      uint64(r.CompressionFactor),
			ReadAheadSize:          32,
		}
		if st.CompressionAlgorithm == "" {
			st.CompressionAlgorithm = "none"
		}
		if fs := p.Manifest.GetDynamicPartitionMetadata().GetVabcFeatureSet(); fs != nil {
			st.EnableThreading, st.BatchedWrites = fs.GetThreaded(), fs.GetBatchWrites()
		}
		if s.old != "" {
			if f, err := os.Open(filepath.Join(s.old, r.Name+".img")); err == nil {
				n, err := f.Seek(0, io.SeekEnd)
				f.Close()
				if err != nil {
					return err
				}
				st.OldPartitionSize = uint64(n)
			}
		} else if oi := pu.GetOldPartitionInfo(); oi != nil {
			st.OldPartitionSize = oi.GetSize()
		}
		snaps = append(snaps, st)
	}
	d := state.Dir{Path: s.dir}
	if err := update.CreateSnapshots(d, snaps); err != nil {
		return err
	}
	return update.Finished(d, s.source, false, nil)
}

// sealImage renames a finished COW to its image name, pads it to a whole
// number of 4 KiB blocks and syncs file and directory; it returns the size.
func sealImage(cowPath, img string) (int64, error) {
	f, err := os.OpenFile(cowPath, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := (fi.Size() + 4095) &^ 4095
	if err := f.Truncate(size); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	if err := os.Rename(cowPath, img); err != nil {
		return 0, err
	}
	os.Remove(cowPath + ".state")
	dir, err := os.Open(filepath.Dir(img))
	if err != nil {
		return 0, err
	}
	defer dir.Close()
	return size, dir.Sync()
}
