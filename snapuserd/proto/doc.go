// Package proto is snapuserd's control-socket server, wire-compatible with
// AOSP's SnapuserdServer (spec snapuserd.md §9): a Unix stream socket, no
// framing (one recv of at most 512 bytes is one message, one send is one
// reply), comma-separated ASCII fields, strict request→response lock-step.
//
// Commands are a name → handler table (commands.go); each handler parses its
// fields and calls the Daemon, which owns the snapshot handlers. Replies are
// the exact AOSP strings: "success", "fail", "success,<num_sectors>",
// "active"/"passive", C "%f" merge percentages and the merge status strings.
// "stop" and "detach" get no reply and end Run. An unknown command is
// answered "fail" and its connection is closed; a known command with the
// wrong number of fields is answered "fail" (getstatus:
// "snapshot-merge-failed") and the connection stays open, as in AOSP.
package proto
