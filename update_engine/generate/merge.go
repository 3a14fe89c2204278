package generate

import (
	"container/heap"
	"sort"

	"github.com/vabc-go/vabc/update_engine/metadata"
	"google.golang.org/protobuf/proto"
)

// mergeNode is one CowMergeOperation in the making: dst blocks
// [dst, dst+n), source blocks [src, src+srcN).
type mergeNode struct {
	typ       metadata.CowMergeOperation_Type
	dst, n    uint64
	src, srcN uint64
	srcOffset uint32
}

// mergeNodes turns SOURCE_COPY block pairs and XOR hints into maximal
// extents.
func mergeNodes(copies [][2]uint64, xors []xorMap) []mergeNode {
	sort.Slice(copies, func(i, j int) bool { return copies[i][0] < copies[j][0] })
	var out []mergeNode
	for _, c := range copies {
		if l := len(out); l > 0 && out[l-1].dst+out[l-1].n == c[0] && out[l-1].src+out[l-1].n == c[1] {
			out[l-1].n++
			out[l-1].srcN++
			continue
		}
		out = append(out, mergeNode{typ: metadata.CowMergeOperation_COW_COPY, dst: c[0], n: 1, src: c[1], srcN: 1})
	}
	sort.Slice(xors, func(i, j int) bool { return xors[i].dst < xors[j].dst })
	start := len(out)
	for _, x := range xors {
		if l := len(out); l > start {
			last := &out[l-1]
			if last.dst+last.n == x.dst && last.src+last.n == x.src && last.srcOffset == x.srcOffset {
				last.n++
				last.srcN++
				continue
			}
		}
		srcN := uint64(1)
		if x.srcOffset != 0 {
			srcN = 2 // a shifted block straddles two source blocks
		}
		out = append(out, mergeNode{typ: metadata.CowMergeOperation_COW_XOR, dst: x.dst, n: 1, src: x.src, srcN: srcN, srcOffset: x.srcOffset})
	}
	return out
}

type nodeHeap struct {
	idx   []int
	nodes []mergeNode
}

func (h *nodeHeap) Len() int           { return len(h.idx) }
func (h *nodeHeap) Less(i, j int) bool { return h.nodes[h.idx[i]].dst < h.nodes[h.idx[j]].dst }
func (h *nodeHeap) Swap(i, j int)      { h.idx[i], h.idx[j] = h.idx[j], h.idx[i] }
func (h *nodeHeap) Push(x any)         { h.idx = append(h.idx, x.(int)) }
func (h *nodeHeap) Pop() any {
	x := h.idx[len(h.idx)-1]
	h.idx = h.idx[:len(h.idx)-1]
	return x
}

// orderMerge returns the nodes in a safe merge order: a node that reads
// blocks another node writes comes before it. Nodes without constraints keep
// increasing destination order. Cycles are broken by dropping the node with
// the most remaining constraints (update_engine converts such nodes to
// COW_REPLACE; dropping them has the same effect on the device: their
// blocks are written as replace data, which merges after all copies).
// A node's overlap with itself is handled by the merge direction (spec §3.9)
// and is not a constraint.
func orderMerge(nodes []mergeNode) (ordered, dropped []mergeNode) {
	n := len(nodes)
	byDst := make([]int, n)
	for i := range byDst {
		byDst[i] = i
	}
	sort.Slice(byDst, func(a, b int) bool { return nodes[byDst[a]].dst < nodes[byDst[b]].dst })
	// succ[b] = nodes that must wait for b (b reads what they write).
	succ := make([][]int, n)
	pred := make([][]int, n)
	indeg := make([]int, n)
	for b := range nodes {
		s, e := nodes[b].src, nodes[b].src+nodes[b].srcN
		k := sort.Search(n, func(k int) bool {
			x := nodes[byDst[k]]
			return x.dst+x.n > s
		})
		for ; k < n && nodes[byDst[k]].dst < e; k++ {
			a := byDst[k]
			if a == b {
				continue
			}
			succ[b] = append(succ[b], a)
			pred[a] = append(pred[a], b)
			indeg[a]++
		}
	}
	done := make([]bool, n)
	h := &nodeHeap{nodes: nodes}
	for i := range nodes {
		if indeg[i] == 0 {
			h.idx = append(h.idx, i)
		}
	}
	heap.Init(h)
	remaining := n
	release := func(i int) {
		done[i] = true
		remaining--
		for _, a := range succ[i] {
			if !done[a] {
				indeg[a]--
				if indeg[a] == 0 {
					heap.Push(h, a)
				}
			}
		}
	}
	for remaining > 0 {
		if h.Len() == 0 {
			// Cycle: drop the pending node with the most pending constraints.
			best, bestScore := -1, -1
			for _, i := range byDst {
				if done[i] {
					continue
				}
				score := indeg[i]
				for _, a := range succ[i] {
					if !done[a] {
						score++
					}
				}
				if score > bestScore {
					best, bestScore = i, score
				}
			}
			dropped = append(dropped, nodes[best])
			release(best)
			continue
		}
		i := heap.Pop(h).(int)
		if done[i] {
			continue
		}
		ordered = append(ordered, nodes[i])
		release(i)
	}
	return ordered, dropped
}

func (m mergeNode) proto() *metadata.CowMergeOperation {
	op := &metadata.CowMergeOperation{
		Type:      m.typ.Enum(),
		SrcExtent: &metadata.Extent{StartBlock: proto.Uint64(m.src), NumBlocks: proto.Uint64(m.srcN)},
		DstExtent: &metadata.Extent{StartBlock: proto.Uint64(m.dst), NumBlocks: proto.Uint64(m.n)},
	}
	if m.typ == metadata.CowMergeOperation_COW_XOR {
		op.SrcOffset = proto.Uint32(m.srcOffset)
	}
	return op
}
