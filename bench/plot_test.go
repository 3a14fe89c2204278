package main

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

func decodePNG(t *testing.T, path string) *canvas {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	c := newCanvas(img.Bounds().Dx(), img.Bounds().Dy())
	for y := 0; y < img.Bounds().Dy(); y++ {
		for x := 0; x < img.Bounds().Dx(); x++ {
			r, g, b, a := img.At(x, y).RGBA()
			c.Pix[c.PixOffset(x, y)], c.Pix[c.PixOffset(x, y)+1], c.Pix[c.PixOffset(x, y)+2], c.Pix[c.PixOffset(x, y)+3] = uint8(r>>8), uint8(g>>8), uint8(b>>8), uint8(a>>8)
		}
	}
	return &c
}

// TestBarChart: each bar's length is proportional to its value, in its
// group's colour.
func TestBarChart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bars.png")
	if err := barChart(path, "T", "MB/S", []bar{{"A", 100, 0}, {"B", 50, 1}}, []string{"one", "two"}); err != nil {
		t.Fatal(err)
	}
	c := decodePNG(t, path)
	const top, rowH = 50, 22
	run := func(row int) (n int) {
		y := top + row*rowH + rowH/2
		for x := 0; x < c.Rect.Dx(); x++ {
			if c.RGBAAt(x, y) == palette[row] {
				n++
			}
		}
		return n
	}
	a, b := run(0), run(1)
	if a < 100 || b < 50 || a < 2*b-4 || a > 2*b+4 {
		t.Errorf("bar lengths %d and %d px for values 100 and 50", a, b)
	}
}

// TestLineChart: a rising line starts bottom-left and ends top-right.
func TestLineChart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "line.png")
	if err := lineChart(path, "T", "X", "Y", 100, []series{{name: "s", points: [][2]float64{{0, 0}, {10, 100}}, marks: []float64{5}}}); err != nil {
		t.Fatal(err)
	}
	c := decodePNG(t, path)
	const w, h, left, right, top, bottom = 900, 480, 70, 20, 50, 60
	near := func(x, y int) bool {
		for dy := -2; dy <= 2; dy++ {
			for dx := -2; dx <= 2; dx++ {
				if c.RGBAAt(x+dx, y+dy) == palette[0] {
					return true
				}
			}
		}
		return false
	}
	for _, p := range [][2]int{{left + 4, h - bottom - 4}, {(left + w - right) / 2, (top + h - bottom) / 2}, {w - right - 4, top + 4}} {
		if !near(p[0], p[1]) {
			t.Errorf("no line pixel near %v", p)
		}
	}
	if c.RGBAAt(left+20, h-bottom-100) == palette[0] {
		t.Errorf("line colour far below the diagonal")
	}
}

func TestNiceStep(t *testing.T) {
	for _, tc := range []struct{ max, want float64 }{{100, 20}, {13470, 5000}, {3.3, 1}, {2.5, 0.5}, {0, 1}} {
		if got := niceStep(tc.max, 6); got != tc.want {
			t.Errorf("niceStep(%v) = %v, want %v", tc.max, got, tc.want)
		}
	}
}
