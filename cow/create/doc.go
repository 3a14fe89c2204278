// Package create builds a Virtual A/B COW that turns one partition image into
// another, the Go counterpart of AOSP create_snapshot
// (libsnapshot_cow/create_cow.cpp, shared/spec/cow-format.md §6.2).
//
// The work is split in three steps, each usable on its own:
//
//  1. Analyze: per target block, decide what the COW must say about it.
//     Blocks equal to the source block at the same offset need no op (the
//     snapshot reads them from the base device); all-zero blocks become Zero
//     ops; blocks found byte-equal somewhere in the source (hash index of
//     every source block, verified byte by byte) become Copy ops; with Xor
//     enabled, a changed block whose XOR against the source block at the same
//     offset compresses clearly better becomes an Xor op; everything else is
//     Replace data.
//  2. Order: Copy and Xor ops read the old image, so they are merged first
//     and in an order where no op reads a block an earlier op already
//     overwrote (§4.3 VerifyMergeOps). Every block is written by at most one
//     op, so each Copy has at most one successor in the dependency graph: the
//     graph is a set of trees hanging off simple cycles. A topological sort
//     orders the trees, and exactly one copy per cycle (the minimum possible)
//     is turned into a Replace op.
//  3. Emit: sequence data first (the merge order of the ordered ops), then
//     the ordered ops in that order, then Replace runs and Zero runs in
//     ascending block order, through any Writer (the cow v2/v3 writers, or a
//     size-only sink for estimates).
//
// Output depends only on the inputs and options, never on Options.Threads:
// parallel workers fill per-block slots and every decision is made from
// those slots in block order.
package create
