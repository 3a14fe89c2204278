package vabc

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/update_engine/metadata"
	"github.com/vabc-go/vabc/update_engine/ops"
	"github.com/vabc-go/vabc/update_engine/payload"
)

// partWriter writes one partition's COW.
type partWriter struct {
	p      *payload.Payload
	pu     *metadata.PartitionUpdate
	name   string
	bs     int64
	src    *os.File // nil for full partitions
	srcSz  int64
	plan   *mergePlan
	w      cow.Writer
	res    Result
	prog   *progress
	threds int

	skipVerify bool
}

// action is one COW write of an install operation.
type action struct {
	kind byte // 'r' replace, 'z' zero, 'x' xor
	dst  uint64
	n    uint64 // blocks (zero)
	data []byte
	src  uint64 // xor source block
	off  uint16 // xor source offset
}

type pending struct {
	done  chan struct{}
	acts  []action
	bytes int64
	cost  int64 // bytes of mem held until the op is applied
	err   error
}

// maxOpBuffer bounds the destination bytes one operation may buffer and the
// bytes all computed-but-unapplied operations hold together. AOSP's
// generator caps diff ops at 200 MiB of destination and full-payload
// chunks at 2 MiB, so real payloads stay below it; a crafted op with a
// larger, highly compressible destination is refused instead of growing
// the process.
const maxOpBuffer = 256 << 20

// bufferCost is what compute holds for op until it is applied.
func bufferCost(op *metadata.InstallOperation, bs int64) int64 {
	switch op.GetType() {
	case metadata.InstallOperation_ZERO, metadata.InstallOperation_DISCARD:
		return 0
	}
	return min(ops.ExtentBytes(op.DstExtents, bs), maxOpBuffer)
}

// run writes install operations next… and the end label; saved is called
// after each durable label.
func (pw *partWriter) run(ctx context.Context, next uint64, saved func(uint64) error) error {
	opsList := pw.pu.Operations
	if next != cow.EndOfInstallLabel {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		threads := max(pw.threds, 1)
		queue := make(chan *pending, 2*threads)
		mem := ops.NewBudget(maxOpBuffer)
		go func() {
			defer close(queue)
			sem := make(chan struct{}, threads)
			for i := int(next); i < len(opsList); i++ {
				pd := &pending{done: make(chan struct{}), cost: bufferCost(opsList[i], pw.bs)}
				select {
				case queue <- pd:
				case <-ctx.Done():
					return
				}
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					pd.err = ctx.Err()
					close(pd.done)
					return
				}
				// Buffers live until the op is applied: bound the bytes
				// held by computed-but-unapplied ops, not only the number
				// computing at once.
				if !mem.Acquire(ctx, pd.cost) {
					<-sem
					pd.cost = 0
					pd.err = ctx.Err()
					close(pd.done)
					return
				}
				go func() {
					defer func() { <-sem }()
					pd.acts, pd.bytes, pd.err = pw.compute(ctx, i)
					close(pd.done)
				}()
			}
		}()
		drain := func() {
			cancel()
			for pd := range queue {
				<-pd.done
				mem.Release(pd.cost)
			}
		}
		for i := int(next); i < len(opsList); i++ {
			pd, ok := <-queue
			if !ok {
				drain()
				return ctx.Err()
			}
			<-pd.done
			if pd.err == nil {
				pd.err = pw.apply(ctx, pd.acts)
			}
			pd.acts = nil
			mem.Release(pd.cost)
			if pd.err == nil {
				pd.err = pw.w.AddLabel(uint64(i + 1))
				if pd.err == nil {
					pd.err = saved(uint64(i + 1))
				}
			}
			if pd.err != nil {
				drain()
				if errors.Is(pd.err, context.Canceled) || errors.Is(pd.err, context.DeadlineExceeded) {
					return pd.err
				}
				return &payload.OpError{Partition: pw.name, Index: i, Type: opsList[i].GetType(), Err: pd.err}
			}
			pw.prog.add(pd.bytes)
			if err := ctx.Err(); err != nil {
				drain()
				return err
			}
		}
		if n := uint64(len(opsList)); hasVerity(pw.pu) && next <= n {
			// The hash tree and FEC are computed from the snapshot as it
			// stands after the last install op, then written as Replace
			// data with a label of their own (resume point).
			if err := pw.writeVerity(ctx, n); err != nil {
				return err
			}
			if err := pw.w.AddLabel(n + 1); err != nil {
				return fmt.Errorf("vabc: partition %s: verity label: %w", pw.name, err)
			}
			if err := saved(n + 1); err != nil {
				return err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := pw.w.AddLabel(cow.EndOfInstallLabel); err != nil {
			return fmt.Errorf("vabc: partition %s: end label: %w", pw.name, err)
		}
		if err := saved(cow.EndOfInstallLabel); err != nil {
			return err
		}
	}
	return nil
}

// apply writes the actions of one operation.
func (pw *partWriter) apply(ctx context.Context, acts []action) error {
	bs := uint64(pw.bs)
	for _, a := range acts {
		if err := ctx.Err(); err != nil {
			return err
		}
		var err error
		switch a.kind {
		case 'r':
			err = pw.w.AddRawBlocks(a.dst, a.data)
			pw.res.ReplaceBlocks += len(a.data) / int(bs)
		case 'z':
			err = pw.w.AddZeroBlocks(a.dst, a.n)
			pw.res.ZeroBlocks += int(a.n)
		case 'x':
			err = pw.w.AddXorBlocks(a.dst, a.data, a.src, a.off)
			pw.res.XorBlocks += len(a.data) / int(bs)
		}
		if errors.Is(err, cow.ErrCapacity) {
			return fmt.Errorf("%w (estimate_op_count_max %d is too small for this partition)", err, pw.pu.GetEstimateOpCountMax())
		}
		if err != nil {
			return err
		}
	}
	return nil
}
