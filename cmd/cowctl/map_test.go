package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vabc-go/vabc/cow"
)

// writeMapCOW writes a COW for an 8-block partition: block 0 copy, 1 xor,
// 2–3 replace, 4 unchanged, 5 zero, 6–7 unchanged; numMergeOps ops of the
// merge order are merged.
func writeMapCOW(t *testing.T, version int, numMergeOps uint64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "map.cow")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	opts := cow.WriterOptions{NumMergeOps: numMergeOps, MaxBlocks: 8}
	type writer interface {
		AddCopy(newBlock, oldBlock, numBlocks uint64) error
		AddXorBlocks(newBlockStart uint64, data []byte, oldBlock uint64, offset uint16) error
		AddRawBlocks(newBlockStart uint64, data []byte) error
		AddZeroBlocks(newBlockStart, numBlocks uint64) error
		Finalize() error
		Close() error
	}
	var w writer
	if version == 2 {
		w, err = cow.NewWriterV2(f, opts)
	} else {
		w, err = cow.NewWriterV3(f, opts)
	}
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0x5a}, 2*4096)
	for _, step := range []func() error{
		func() error { return w.AddCopy(0, 6, 1) },
		func() error { return w.AddXorBlocks(1, data[:4096], 7, 0) },
		func() error { return w.AddRawBlocks(2, data) },
		func() error { return w.AddZeroBlocks(5, 1) },
		w.Finalize, w.Close,
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func TestMapPNGAndJSON(t *testing.T) {
	pale := func(c color.RGBA) color.RGBA { return color.RGBA{c.R/2 + 0x80, c.G/2 + 0x80, c.B/2 + 0x80, 0xff} }
	grey, blue, purple, orange, dark := kindColors[0], kindColors[cow.OpCopy], kindColors[cow.OpXor], kindColors[cow.OpReplace], kindColors[cow.OpZero]
	for _, version := range []int{2, 3} {
		for _, tc := range []struct {
			name     string
			merged   uint64
			want     []color.RGBA // per block 0…7
			wantRuns []blockRun
		}{
			{"unmerged", 0, []color.RGBA{blue, purple, orange, orange, grey, dark, grey, grey}, []blockRun{
				{0, 1, "copy", false}, {1, 1, "xor", false}, {2, 2, "replace", false},
				{4, 1, "unchanged", false}, {5, 1, "zero", false}, {6, 2, "unchanged", false}}},
			// The two ordered ops (copy, xor) come first in every merge order.
			{"ordered-merged", 2, []color.RGBA{pale(blue), pale(purple), orange, orange, grey, dark, grey, grey}, []blockRun{
				{0, 1, "copy", true}, {1, 1, "xor", true}, {2, 2, "replace", false},
				{4, 1, "unchanged", false}, {5, 1, "zero", false}, {6, 2, "unchanged", false}}},
		} {
			t.Run(tc.name+"-v"+string(rune('0'+version)), func(t *testing.T) {
				cowPath := writeMapCOW(t, version, tc.merged)
				pngPath := filepath.Join(t.TempDir(), "map.png")
				var out, errb bytes.Buffer
				// 4 cells per row, 3×3 px each: 12×6 px for 8 blocks.
				if err := runMap(t.Context(), []string{"--png", pngPath, "--blocks", "8", "--columns", "4", "--scale", "3", "--json", cowPath}, &out, &errb); err != nil {
					t.Fatalf("map: %v\n%s", err, errb.String())
				}
				f, err := os.Open(pngPath)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				img, err := png.Decode(f)
				if err != nil {
					t.Fatalf("decode %s: %v", pngPath, err)
				}
				if b := img.Bounds(); b.Dx() != 12 || b.Dy() != 6 {
					t.Fatalf("picture is %v, want 12×6", b)
				}
				for blk, want := range tc.want {
					for _, d := range [][2]int{{0, 0}, {2, 2}, {1, 2}} { // every pixel of the cell
						x, y := (blk%4)*3+d[0], (blk/4)*3+d[1]
						if got := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA); got != want {
							t.Errorf("block %d pixel (%d,%d): %v, want %v", blk, x, y, got, want)
						}
					}
				}
				var res blockMapResult
				if err := json.Unmarshal(out.Bytes(), &res); err != nil {
					t.Fatalf("--json: %v\n%s", err, out.String())
				}
				if !reflect.DeepEqual(res.Runs, tc.wantRuns) {
					t.Errorf("runs %+v\nwant %+v", res.Runs, tc.wantRuns)
				}
				if res.Blocks != 8 || res.NumMergeOps != tc.merged || res.TotalDataOps != 5 || res.MergedBlocks != tc.merged {
					t.Errorf("blocks %d num_merge_ops %d total %d merged %d", res.Blocks, res.NumMergeOps, res.TotalDataOps, res.MergedBlocks)
				}
				wantCounts := map[string]uint64{"unchanged": 3, "copy": 1, "xor": 1, "replace": 2, "zero": 1}
				if !reflect.DeepEqual(res.Counts, wantCounts) {
					t.Errorf("counts %v, want %v", res.Counts, wantCounts)
				}
			})
		}
	}
}

func TestMapLargeAndErrors(t *testing.T) {
	cowPath := writeMapCOW(t, 3, 0)
	// More blocks than columns×rows: cells cover several blocks, the
	// strongest change wins (block 0–3 → one cell showing replace).
	kinds := []blockKind{blockKind(cow.OpCopy), blockKind(cow.OpZero), blockKind(cow.OpReplace) | mergedBit, blockKind(cow.OpReplace), 0, 0, 0, 0}
	img, per := drawBlockMap(kinds, 1, 1, 2)
	if per != 4 || img.Bounds().Dy() != 2 {
		t.Fatalf("per %d, %v", per, img.Bounds())
	}
	if got := img.RGBAAt(0, 0); got != kindColors[cow.OpReplace] {
		t.Errorf("cell 0: %v, want unmerged replace", got)
	}
	if got := img.RGBAAt(0, 1); got != kindColors[0] {
		t.Errorf("cell 1: %v, want unchanged", got)
	}

	src := filepath.Join(t.TempDir(), "small.img")
	if err := os.WriteFile(src, make([]byte, 4*4096), 0o644); err != nil {
		t.Fatal(err)
	}
	odd := filepath.Join(t.TempDir(), "odd.img")
	if err := os.WriteFile(odd, make([]byte, 4097), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args  []string
		usage bool
		want  string
	}{
		{[]string{"--source", src, cowPath}, false, "writes block 5, past the partition's 4 blocks"},
		{[]string{"--source", odd, cowPath}, false, "not a whole number"},
		{[]string{"--source", src, "--blocks", "9", cowPath}, true, "exclusive"},
		{[]string{"--columns", "0", cowPath}, true, "--columns"},
		{[]string{}, true, "exactly one COW"},
		{[]string{filepath.Join(t.TempDir(), "missing.cow")}, false, "no such file"},
	} {
		var out, errb bytes.Buffer
		err := runMap(t.Context(), tc.args, &out, &errb)
		var ue *usageError
		if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.usage != (errorAs(err, &ue))) {
			t.Errorf("map %q: %v (usage %v), want %q", tc.args, err, tc.usage, tc.want)
		}
	}
	// Without --blocks/--source the partition ends at the last op's block.
	var out, errb bytes.Buffer
	if err := runMap(t.Context(), []string{cowPath}, &out, &errb); err != nil || !strings.Contains(out.String(), "6 blocks of 4096 bytes") {
		t.Errorf("map without a size: %v %q", err, out.String())
	}
}

func errorAs(err error, target **usageError) bool { return errors.As(err, target) }

// TestMapFixtures maps the committed COW fixtures (AOSP's own cow_v2 among
// them): every data op of a v2 COW covers one block, so the changed blocks
// equal the data ops; the merged blocks equal num_merge_ops.
func TestMapFixtures(t *testing.T) {
	for _, name := range []string{"v2_legacy.cow", "v2_gz_seq.cow", "v3_lz4_64k.cow"} {
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if err := runMap(t.Context(), []string{"--json", filepath.Join("..", "..", "cow", "testdata", name)}, &out, &errb); err != nil {
				t.Fatal(err)
			}
			var res blockMapResult
			if err := json.Unmarshal(out.Bytes(), &res); err != nil {
				t.Fatal(err)
			}
			var changed, sum uint64
			for typ, n := range res.Counts {
				sum += n
				if typ != "unchanged" {
					changed += n
				}
			}
			if sum != res.Blocks || len(res.Runs) == 0 {
				t.Errorf("counts sum to %d of %d blocks, %d runs", sum, res.Blocks, len(res.Runs))
			}
			if strings.HasPrefix(name, "v2") && changed != uint64(res.TotalDataOps) {
				t.Errorf("%d changed blocks, %d data ops", changed, res.TotalDataOps)
			}
			if !strings.HasPrefix(name, "v2") && changed < uint64(res.TotalDataOps) {
				t.Errorf("%d changed blocks < %d data ops", changed, res.TotalDataOps)
			}
			if res.MergedBlocks != res.NumMergeOps && strings.HasPrefix(name, "v2") {
				t.Errorf("merged blocks %d, num_merge_ops %d", res.MergedBlocks, res.NumMergeOps)
			}
		})
	}
}
