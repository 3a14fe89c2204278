package main

// Scenarios that need the snapuserd daemon and snapshotctl, which other branches are still
// writing. They are listed so that every run reports them, and report SKIP with the reason
// instead of pretending to pass. Replace each entry's missing field by a run function (in
// its own scenario_*.go file) once the binaries exist; e2e/run.sh already builds
// cmd/snapuserd and cmd/snapshotctl into the initramfs's /bin when those packages exist.
func init() {
	register(scenario{name: "snapuserd-user",
		missing: "not yet present: needs the snapuserd daemon and snapshotctl (userspace-snapshot mode over dm-user, ext4 mount, merge, reboot)"})
	register(scenario{name: "snapuserd-merge-kill",
		missing: "not yet present: needs the snapuserd daemon and snapshotctl (SIGKILL mid-merge, restart, merge completes)"})
}
