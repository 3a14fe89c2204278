package merge

import "strconv"

// WindowState is MERGE_GROUP_STATE: where readers get an ordered op's
// target bytes (snapuserd.md §4).
type WindowState uint8

const (
	// WindowPending: not read ahead; readers read the sources from base.
	WindowPending WindowState = iota
	// WindowRAReady: sources are in the read-ahead buffer.
	WindowRAReady
	// WindowInProgress: the window is being written to base; readers use
	// the buffer.
	WindowInProgress
	// WindowCompleted: committed; readers read base at the destination.
	WindowCompleted
	// WindowFailed: the merge failed on this window; reads fail.
	WindowFailed
)

var windowStateNames = [...]string{"PENDING", "RA_READY", "IN_PROGRESS", "COMPLETED", "FAILED"}

func (s WindowState) String() string {
	if int(s) < len(windowStateNames) {
		return windowStateNames[s]
	}
	return "WindowState(" + strconv.Itoa(int(s)) + ")"
}

// Phase is where the engine is.
type Phase uint8

const (
	PhaseIdle     Phase = iota // merge not initiated (or stopped)
	PhaseQueued                // waiting for a Limiter slot
	PhaseOrdered               // merging Copy/Xor windows
	PhaseReplace               // merging Replace/Zero ops
	PhaseComplete              // num_merge_ops == total
	PhaseFailed                // an error stopped the merge
)

var phaseNames = [...]string{"idle", "queued", "ordered", "replace", "complete", "failed"}

func (p Phase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return "Phase(" + strconv.Itoa(int(p)) + ")"
}

// Merge status strings of the control protocol (snapuserd.md §8).
const (
	StatusSnapshot      = "snapshot"
	StatusMerge         = "snapshot-merge"
	StatusMergeComplete = "snapshot-merge-complete"
	StatusMergeFailed   = "snapshot-merge-failed"
)

// Status maps a phase to getstatus' reply.
func (p Phase) Status() string {
	switch p {
	case PhaseQueued, PhaseOrdered, PhaseReplace:
		return StatusMerge
	case PhaseComplete:
		return StatusMergeComplete
	case PhaseFailed:
		return StatusMergeFailed
	}
	return StatusSnapshot
}

// Progress is a snapshot of the engine's state.
type Progress struct {
	Phase       Phase
	Status      string  // getstatus string
	NumMergeOps uint64  // committed (durable) num_merge_ops
	TotalOps    uint64  // num_total_data_ops
	Percent     float64 // num_merge_ops*100/total (100 when there are no ops)
	Paused      bool    // Pause requested
	Parked      bool    // the merge is parked at a safe point
	Window      int     // index of the current window (-1 outside phase 1)
	Windows     int     // windows in this run's phase 1
	Err         error   // what stopped the merge, if it failed
}

// OverallPercent is the daemon's merge_percent over the partitions whose
// merge was initiated (snapuserd.md §9.2): (completed×100 + Σ percent of the
// merges in progress) / (completed + in progress). Partitions neither
// merging nor complete are not counted; no partitions → 0.
func OverallPercent(ps []Progress) float64 {
	var sum float64
	n := 0
	for _, p := range ps {
		switch p.Phase {
		case PhaseComplete:
			sum += 100
			n++
		case PhaseQueued, PhaseOrdered, PhaseReplace:
			sum += p.Percent
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}
