package create

import (
	"fmt"
	"slices"
)

// Order computes a safe merge order for the ordered ops (Copy, Xor) in
// blocks and breaks dependency cycles by turning copies into Replace ops
// (modifying blocks in place). It returns the destination blocks of the
// remaining ordered ops in merge order and the destination blocks of the
// copies it converted, ascending.
//
// Constraint: if op A reads block b and op W (≠ A) writes block b, A must be
// merged before W. Replace and Zero ops are merged after all ordered ops
// (§4.3), so only edges between ordered ops matter. The ready set is taken in
// ascending block order (FIFO seeded ascending), so the result is
// deterministic. When no op is ready, every remaining op lies on a cycle or
// downstream of one; walking predecessors from any remaining op finds a
// cycle, and its lowest-numbered copy is converted.
func Order(blocks []BlockOp, blockSize int) (order []uint32, broken []uint32, err error) {
	n := len(blocks)
	if uint64(n) > 1<<32 {
		return nil, nil, fmt.Errorf("create: %d target blocks exceed the 32-bit block numbers of the sequence data", n)
	}
	// node index per block: -1 when the block has no ordered op.
	node := make([]int32, n)
	var nodes []uint32 // node → destination block
	for t := range blocks {
		node[t] = -1
		if blocks[t].Kind.ordered() {
			node[t] = int32(len(nodes))
			nodes = append(nodes, uint32(t))
		}
	}
	if len(nodes) == 0 {
		return nil, nil, nil
	}
	// Edges A → W (A before W), stored as CSR in both directions.
	type edge struct{ from, to int32 }
	var edges []edge
	var reads [2]uint64
	for i, t := range nodes {
		for _, b := range blocks[t].reads(blockSize, reads[:0]) {
			if b >= uint64(n) {
				continue // beyond the target: never written
			}
			if w := node[b]; w >= 0 && w != int32(i) {
				edges = append(edges, edge{int32(i), w})
			}
		}
	}
	m := len(nodes)
	outStart := make([]int32, m+1)
	inStart := make([]int32, m+1)
	for _, e := range edges {
		outStart[e.from+1]++
		inStart[e.to+1]++
	}
	for i := 0; i < m; i++ {
		outStart[i+1] += outStart[i]
		inStart[i+1] += inStart[i]
	}
	out := make([]int32, len(edges))
	in := make([]int32, len(edges))
	op := slices.Clone(outStart[:m])
	ip := slices.Clone(inStart[:m])
	for _, e := range edges {
		out[op[e.from]] = e.to
		op[e.from]++
		in[ip[e.to]] = e.from
		ip[e.to]++
	}
	indeg := make([]int32, m)
	for i := 0; i < m; i++ {
		indeg[i] = inStart[i+1] - inStart[i]
	}
	removed := make([]bool, m) // emitted or converted
	queue := make([]int32, 0, m)
	for i := 0; i < m; i++ {
		if indeg[i] == 0 {
			queue = append(queue, int32(i))
		}
	}
	order = make([]uint32, 0, m)
	release := func(i int32) {
		for _, w := range out[outStart[i]:outStart[i+1]] {
			if removed[w] {
				continue
			}
			indeg[w]--
			if indeg[w] == 0 {
				queue = append(queue, w)
			}
		}
	}
	done := 0
	scan := int32(0) // lowest node that may still be pending
	for done < m {
		for len(queue) > 0 {
			i := queue[0]
			queue = queue[1:]
			if removed[i] {
				continue
			}
			removed[i] = true
			done++
			order = append(order, nodes[i])
			release(i)
		}
		if done == m {
			break
		}
		// Stalled: find a cycle by walking predecessors from the lowest
		// pending node. Every pending node has a pending predecessor.
		for removed[scan] {
			scan++
		}
		seen := map[int32]int{}
		path := []int32{}
		cur := scan
		for {
			if at, ok := seen[cur]; ok {
				cycle := path[at:]
				victim := slices.Min(cycle) // nodes are ascending by block
				removed[victim] = true
				done++
				blocks[nodes[victim]].Kind = KindReplace
				blocks[nodes[victim]].Src = 0
				broken = append(broken, nodes[victim])
				// The victim no longer reads anything: its successors lose
				// one predecessor each; its predecessors lose a successor,
				// which does not change their in-degree.
				release(victim)
				break
			}
			seen[cur] = len(path)
			path = append(path, cur)
			next := int32(-1)
			for _, p := range in[inStart[cur]:inStart[cur+1]] {
				if !removed[p] {
					next = p
					break
				}
			}
			if next < 0 {
				return nil, nil, fmt.Errorf("create: internal error: pending op for block %d has no pending predecessor", nodes[cur])
			}
			cur = next
		}
	}
	slices.Sort(broken)
	return order, broken, nil
}
