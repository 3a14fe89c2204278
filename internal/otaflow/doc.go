// Package otaflow holds end-to-end flows across the tools: its tests build
// the real binaries (cmd/payload, cmd/cowctl and, where present,
// cmd/snapuserd) once per run and drive them the way a user does, on image
// pairs from testdata/imagegen — payload generate → verify → extract →
// apply-cow → cowctl apply/verify/inspect, cowctl create → apply --in-place,
// and a COW served through snapuserd's FUSE export. The package has no
// non-test code.
package otaflow
