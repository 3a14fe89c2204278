package proto

import (
	"fmt"
	"strconv"
)

// command handles one parsed message; fields[0] is the command name.
type command func(s *Server, fields []string) (reply string, keep bool)

// commands is the whole protocol; adding a command means adding a row.
var commands map[string]command

func init() {
	commands = map[string]command{
		"init":           cmdInit,
		"start":          cmdStart,
		"query":          cmdQuery,
		"stop":           cmdStop,
		"delete":         cmdDelete,
		"detach":         cmdDetach,
		"supports":       cmdSupports,
		"initiate_merge": cmdInitiateMerge,
		"merge_percent":  cmdMergePercent,
		"getstatus":      cmdGetStatus,
		"update-verify":  cmdUpdateVerify,
		"pause_merge":    cmdPauseMerge,
		"resume_merge":   cmdResumeMerge,
	}
}

// Commands returns the command names (for docs and tests).
func Commands() []string {
	var out []string
	for k := range commands {
		out = append(out, k)
	}
	return out
}

func ok(err error) string {
	if err != nil {
		return ReplyFail
	}
	return ReplySuccess
}

// init,<misc>,<cow>,<backing>,<base_path_merge>   (userspace snapshots)
// init,<misc>,<cow>,<backing>                     (legacy, Android 12)
func cmdInit(s *Server, f []string) (string, bool) {
	var req InitRequest
	switch len(f) {
	case 5:
		req = InitRequest{Misc: f[1], Cow: f[2], Backing: f[3], BasePath: f[4]}
	case 4:
		req = InitRequest{Misc: f[1], Cow: f[2], Backing: f[3], Legacy: true}
	default:
		s.log.Error("malformed init message", "parts", len(f))
		return ReplyFail, true
	}
	req.Peer = s.curPeer
	n, err := s.d.InitHandler(req)
	if err != nil || n == 0 {
		s.log.Error("init failed", "misc", req.Misc, "err", err)
		return ReplyFail, true
	}
	return "success," + strconv.FormatUint(n, 10), true
}

func cmdStart(s *Server, f []string) (string, bool) {
	if len(f) != 2 {
		s.log.Error("malformed start message", "parts", len(f))
		return ReplyFail, true
	}
	err := s.d.StartHandler(f[1])
	if err != nil {
		s.log.Error("start failed", "misc", f[1], "err", err)
	}
	return ok(err), true
}

func cmdQuery(s *Server, _ []string) (string, bool) {
	if s.Terminating() {
		return ReplyPassive, true
	}
	return ReplyActive, true
}

// stop: no reply; mark terminating, wait for the handlers, end the server.
func cmdStop(s *Server, _ []string) (string, bool) {
	s.terminate()
	s.d.Stop()
	return "", false
}

func cmdDelete(s *Server, f []string) (string, bool) {
	if len(f) != 2 {
		s.log.Error("malformed delete message", "parts", len(f))
		return ReplyFail, true
	}
	err := s.d.DeleteHandler(f[1])
	if err != nil {
		s.log.Error("delete failed", "misc", f[1], "err", err)
	}
	return ok(err), true
}

// detach: no reply; stop merges, end the server.
func cmdDetach(s *Server, _ []string) (string, bool) {
	s.d.Detach()
	s.terminate()
	return "", false
}

func cmdSupports(s *Server, f []string) (string, bool) {
	if len(f) != 2 {
		s.log.Error("malformed supports message", "parts", len(f))
		return ReplyFail, true
	}
	if f[1] == FeatureSocketHandoff {
		return ReplySuccess, true
	}
	return ReplyFail, true
}

func cmdInitiateMerge(s *Server, f []string) (string, bool) {
	if len(f) != 2 {
		s.log.Error("malformed initiate-merge message", "parts", len(f))
		return ReplyFail, true
	}
	err := s.d.InitiateMerge(f[1])
	if err != nil {
		s.log.Error("initiate_merge failed", "misc", f[1], "err", err)
	}
	return ok(err), true
}

// merge_percent: std::to_string(double), i.e. C "%f".
func cmdMergePercent(s *Server, _ []string) (string, bool) {
	return fmt.Sprintf("%f", s.d.MergePercent()), true
}

func cmdGetStatus(s *Server, f []string) (string, bool) {
	if len(f) != 2 {
		s.log.Error("malformed getstatus message", "parts", len(f))
		return StatusMergeFailed, true
	}
	return s.d.MergeStatus(f[1]), true
}

func cmdUpdateVerify(s *Server, _ []string) (string, bool) {
	if s.d.UpdateVerify() {
		return ReplySuccess, true
	}
	return ReplyFail, true
}

func cmdPauseMerge(s *Server, _ []string) (string, bool) {
	s.d.PauseMerge()
	return ReplySuccess, true
}

func cmdResumeMerge(s *Server, _ []string) (string, bool) {
	s.d.ResumeMerge()
	return ReplySuccess, true
}
