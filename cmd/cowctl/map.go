package main

import (
	"bufio"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"os"

	"github.com/vabc-go/vabc/cow"
	"github.com/vabc-go/vabc/internal/cli"
)

const mapHelp = `Draws the partition's blocks as a picture: one cell per block (or per group of
blocks on a large partition), left to right and top to bottom, coloured by
what the COW does to the block. A COW in the middle of a merge (num_merge_ops
> 0) shows the merged blocks in a pale shade of their op's colour. --json
prints the same map as runs of consecutive blocks with the same op type and
merge state.

Colours:
  unchanged  light grey  #d9d9d9   (no op: the block is read from the base)
  copy       blue        #1f77b4
  xor        purple      #9467bd
  replace    orange      #ff7f0e
  zero       dark grey   #333333
  merged     the op colour blended halfway to white
  (past the end of the partition: white)

The partition size comes from --source (the base image) or --blocks; without
either it ends at the last block an op writes.

Examples:
  cowctl map --png system.png system.cow
  cowctl map --png system.png --source system_a.img system.cow
  cowctl map --json system.cow | jq '.runs[] | select(.type == "xor")'`

// maxMapBlocks bounds the per-block table (64 Mi blocks: a 256 GiB
// partition at 4 KiB blocks).
const maxMapBlocks = 1 << 26

// blockRun is a --json run: blocks [start, start+blocks) with one op type
// and merge state.
type blockRun struct {
	Start  uint64 `json:"start"`
	Blocks uint64 `json:"blocks"`
	Type   string `json:"type"` // unchanged, copy, xor, replace, zero
	Merged bool   `json:"merged"`
}

// blockMapResult is the --json object of map.
type blockMapResult struct {
	COW          string            `json:"cow"`
	BlockSize    uint32            `json:"block_size"`
	Blocks       uint64            `json:"blocks"`
	NumMergeOps  uint64            `json:"num_merge_ops"`
	TotalDataOps int               `json:"num_total_data_ops"`
	MergedBlocks uint64            `json:"merged_blocks"`
	Counts       map[string]uint64 `json:"counts"` // blocks per type
	Runs         []blockRun        `json:"runs"`
	PNG          string            `json:"png,omitempty"`
	PNGWidth     int               `json:"png_width,omitempty"`
	PNGHeight    int               `json:"png_height,omitempty"`
	BlocksPerPx  uint64            `json:"blocks_per_cell,omitempty"`
}

// blockKind is a cell state: an op type (copy, replace, zero, xor) or 0 for
// unchanged; mergedBit marks a merged block.
type blockKind uint8

const mergedBit blockKind = 0x80

func (k blockKind) typeName() string {
	if k&^mergedBit == 0 {
		return "unchanged"
	}
	return cow.OpType(k &^ mergedBit).String()
}

var kindColors = map[cow.OpType]color.RGBA{
	0:             {0xd9, 0xd9, 0xd9, 0xff},
	cow.OpCopy:    {0x1f, 0x77, 0xb4, 0xff},
	cow.OpXor:     {0x94, 0x67, 0xbd, 0xff},
	cow.OpReplace: {0xff, 0x7f, 0x0e, 0xff},
	cow.OpZero:    {0x33, 0x33, 0x33, 0xff},
}

var pastEnd = color.RGBA{0xff, 0xff, 0xff, 0xff}

func (k blockKind) color() color.RGBA {
	c := kindColors[cow.OpType(k&^mergedBit)]
	if k&mergedBit != 0 {
		c = color.RGBA{c.R/2 + 0x80, c.G/2 + 0x80, c.B/2 + 0x80, 0xff}
	}
	return c
}

// priority decides which block a multi-block cell shows: the most
// significant change wins, unmerged over merged.
func (k blockKind) priority() int {
	p := map[cow.OpType]int{0: 0, cow.OpZero: 1, cow.OpCopy: 2, cow.OpXor: 3, cow.OpReplace: 4}[cow.OpType(k&^mergedBit)] * 2
	if k&mergedBit == 0 {
		p++
	}
	return p
}

// buildBlockMap classifies every partition block of r. blocks 0 means "up
// to the last block an op writes".
func buildBlockMap(r *cow.Reader, blocks uint64, name string) ([]blockKind, error) {
	merged := map[int]bool{} // index into Ops() → merged
	order := r.MergeIndex()
	for i := uint64(0); i < r.MergeOpStart() && i < uint64(len(order)); i++ {
		merged[order[i]] = true
	}
	ops := r.Ops()
	end := uint64(0)
	for i := range ops {
		op := &ops[i]
		if !isBlockOp(op.Type) {
			continue
		}
		if last := op.NewBlock + op.Blocks(); last < op.NewBlock {
			return nil, fmt.Errorf("%s: op %d: new_block %d overflows", name, i, op.NewBlock)
		} else if blocks != 0 && last > blocks {
			return nil, fmt.Errorf("%s: op %d (%s) writes block %d, past the partition's %d blocks", name, i, op.Type, last-1, blocks)
		} else {
			end = max(end, last)
		}
	}
	if blocks == 0 {
		blocks = end
	}
	if blocks > maxMapBlocks {
		return nil, fmt.Errorf("%s: %d blocks: more than the %d this map draws", name, blocks, maxMapBlocks)
	}
	kinds := make([]blockKind, blocks)
	for i := range ops {
		op := &ops[i]
		if !isBlockOp(op.Type) {
			continue
		}
		k := blockKind(op.Type)
		if merged[i] {
			k |= mergedBit
		}
		for b := op.NewBlock; b < op.NewBlock+op.Blocks(); b++ {
			kinds[b] = k
		}
	}
	return kinds, nil
}

func isBlockOp(t cow.OpType) bool {
	return t == cow.OpCopy || t == cow.OpXor || t == cow.OpReplace || t == cow.OpZero
}

func blockRuns(kinds []blockKind) []blockRun {
	var runs []blockRun
	for i := 0; i < len(kinds); {
		j := i + 1
		for j < len(kinds) && kinds[j] == kinds[i] {
			j++
		}
		runs = append(runs, blockRun{Start: uint64(i), Blocks: uint64(j - i), Type: kinds[i].typeName(), Merged: kinds[i]&mergedBit != 0})
		i = j
	}
	return runs
}

// drawBlockMap renders kinds as columns cells per row, each cell scale×scale
// pixels; when that would be taller than maxRows cells, each cell covers
// several blocks.
func drawBlockMap(kinds []blockKind, columns, scale, maxRows int) (*image.RGBA, uint64) {
	per := uint64(1)
	cells := uint64(len(kinds))
	for cells > uint64(columns*maxRows) {
		per *= 2
		cells = (uint64(len(kinds)) + per - 1) / per
	}
	rows := int((cells + uint64(columns) - 1) / uint64(columns))
	rows = max(rows, 1)
	img := image.NewRGBA(image.Rect(0, 0, columns*scale, rows*scale))
	for c := 0; c < rows*columns; c++ {
		col := pastEnd
		if start := uint64(c) * per; start < uint64(len(kinds)) {
			best := kinds[start]
			for _, k := range kinds[start:min(start+per, uint64(len(kinds)))] {
				if k.priority() > best.priority() {
					best = k
				}
			}
			col = best.color()
		}
		x0, y0 := (c%columns)*scale, (c/columns)*scale
		for y := y0; y < y0+scale; y++ {
			for x := x0; x < x0+scale; x++ {
				img.SetRGBA(x, y, col)
			}
		}
	}
	return img, per
}

// runMap implements "cowctl map".
func runMap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("map", "[--png OUT.png] [--json] [--source IMG | --blocks N] [--columns N] [--scale N] COW", mapHelp, stderr)
	var pngPath, srcPath string
	var jsonOut bool
	var blocks uint64
	var columns, scale int
	fs.StringVar(&pngPath, "png", "", "write the picture to this PNG file")
	fs.BoolVar(&jsonOut, "json", false, "print the map as one JSON object (runs of blocks)")
	fs.StringVar(&srcPath, "source", "", "base partition image: its size is the partition size")
	fs.Uint64Var(&blocks, "blocks", 0, "partition size in blocks (instead of --source)")
	fs.IntVar(&columns, "columns", 256, "cells per row of the picture")
	fs.IntVar(&scale, "scale", 3, "pixels per cell side")
	if done, err := cli.ParseFlags(fs, args, cli.AnyArgs); done || err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return cli.Usagef("want exactly one COW file, got %d arguments", fs.NArg())
	}
	if srcPath != "" && blocks != 0 {
		return usagef("--source and --blocks are exclusive")
	}
	if columns < 1 || columns > 4096 || scale < 1 || scale > 64 {
		return usagef("--columns must be 1…4096 and --scale 1…64")
	}
	cowPath := fs.Arg(0)
	r, err := cow.Open(cowPath, nil)
	if err != nil {
		return err
	}
	defer r.Close()
	bs := r.Header().BlockSize
	if srcPath != "" {
		img, f, err := openImage(srcPath)
		if err != nil {
			return err
		}
		f.Close()
		if bs == 0 || img.Size%int64(bs) != 0 {
			return fmt.Errorf("%s: %d bytes is not a whole number of %d-byte blocks", srcPath, img.Size, bs)
		}
		blocks = uint64(img.Size / int64(bs))
		if blocks == 0 {
			return fmt.Errorf("%s: empty image", srcPath)
		}
	}
	kinds, err := buildBlockMap(r, blocks, cowPath)
	if err != nil {
		return err
	}
	res := blockMapResult{COW: cowPath, BlockSize: bs, Blocks: uint64(len(kinds)), NumMergeOps: r.MergeOpStart(),
		TotalDataOps: len(r.MergeIndex()), Counts: map[string]uint64{}, Runs: blockRuns(kinds)}
	for _, run := range res.Runs {
		res.Counts[run.Type] += run.Blocks
		if run.Merged {
			res.MergedBlocks += run.Blocks
		}
	}
	if pngPath != "" {
		img, per := drawBlockMap(kinds, columns, scale, 4096/scale)
		if err := writePNG(pngPath, img); err != nil {
			return err
		}
		res.PNG, res.PNGWidth, res.PNGHeight, res.BlocksPerPx = pngPath, img.Bounds().Dx(), img.Bounds().Dy(), per
	}
	if jsonOut {
		return writeJSON(stdout, res)
	}
	fmt.Fprintf(stdout, "%s: %d blocks of %d bytes, %d runs\n", cowPath, res.Blocks, bs, len(res.Runs))
	for _, t := range []string{"unchanged", "copy", "xor", "replace", "zero"} {
		fmt.Fprintf(stdout, "  %-9s %d blocks\n", t, res.Counts[t])
	}
	if res.NumMergeOps > 0 {
		fmt.Fprintf(stdout, "  merged    %d blocks (num_merge_ops %d of %d)\n", res.MergedBlocks, res.NumMergeOps, res.TotalDataOps)
	}
	if pngPath != "" {
		fmt.Fprintf(stdout, "wrote %s: %d×%d px, %d cells per row, %d block(s) per cell\n", pngPath, res.PNGWidth, res.PNGHeight, columns, res.BlocksPerPx)
	}
	return nil
}

func writePNG(path string, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if err := png.Encode(w, img); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
