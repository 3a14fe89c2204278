// Package dmuser speaks the dm-user kernel protocol: the message format that
// the Android common kernel's dm-user target ("user" device-mapper target,
// drivers/md/dm-user.c) exchanges with a userspace daemon over the misc
// character device /dev/dm-user/<misc_name>. snapuserd serves Android's
// userspace snapshots through it (spec snapuserd.md §2).
//
// The package is split like go-fuse's protocolServer/Server:
//
//   - message.go: the 40-byte dm_user_message header (seq, type, flags,
//     sector, len; all little-endian u64), the request/response type values and
//     the REQ_* flag mirrors, with explicit encode/decode.
//   - protocol.go: HandleMessage reads one request from a stream, calls a
//     Handler (read/write/flush/discard on 512-byte sectors) and writes the
//     response. It knows nothing about /dev.
//   - server.go: the transport. A Server runs one worker loop per channel; a
//     channel is one file descriptor opened on /dev/dm-user/<name> (the
//     directory is configurable for tests).
//   - emulator.go: an in-process emulation of the kernel side (Target) that
//     speaks the same bytes over in-process pipes (mempipe.go; no system
//     calls, so that what a benchmark through it measures is the daemon) or,
//     with EmulatorOptions.Socketpair, over socketpairs. It splits block I/O
//     into requests the way the block layer does, keeps several channels, numbers the
//     messages, verifies every response and can tear the target down with
//     requests in flight.
//
// Wire protocol as seen by the daemon (one channel):
//
//	daemon read():  header (40 bytes) [+ len payload bytes for MAP_WRITE]
//	daemon write(): header (40 bytes, same seq, type = response status)
//	                [+ len data bytes for a successful MAP_READ, possibly
//	                spread over several write() calls; only the first write
//	                carries the header]
//
// An ERROR or UNSUPPORTED response carries no data: the kernel completes the
// bio with an I/O error as soon as it has parsed the header. Once the header
// of a successful read response has been written the daemon can no longer
// report an error for that request. When the device-mapper table is torn
// down, read() on every channel fails with ENOTBLK ("block device required");
// the emulation shuts its socket down instead, which the daemon sees as EOF or
// EPIPE. Both are reported as ErrTargetGone and end the worker loops cleanly.
package dmuser
