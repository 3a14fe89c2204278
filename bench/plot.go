package main

// A small PNG chart renderer for the report: line charts (merge progress
// over time) and horizontal bar charts (throughput per codec, payload
// extract against xz). Only image and image/png from the standard library:
// gonum.org/v1/plot would add about fifteen modules (fonts, LaTeX, PDF,
// freetype, gonum) to draw four pictures. Text uses a built-in 3×5 pixel
// font drawn at 2× (upper case, digits and a little punctuation).

import (
	"bufio"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"strings"
)

// glyphs is a 3×5 font: five rows of three pixels, '#' set.
var glyphs = map[rune][5]string{
	'0': {"###", "#.#", "#.#", "#.#", "###"}, '1': {".#.", "##.", ".#.", ".#.", "###"},
	'2': {"##.", "..#", ".#.", "#..", "###"}, '3': {"##.", "..#", ".#.", "..#", "##."},
	'4': {"#.#", "#.#", "###", "..#", "..#"}, '5': {"###", "#..", "##.", "..#", "##."},
	'6': {".##", "#..", "###", "#.#", "###"}, '7': {"###", "..#", ".#.", ".#.", ".#."},
	'8': {"###", "#.#", "###", "#.#", "###"}, '9': {"###", "#.#", "###", "..#", "##."},
	'A': {".#.", "#.#", "###", "#.#", "#.#"}, 'B': {"##.", "#.#", "##.", "#.#", "##."},
	'C': {".##", "#..", "#..", "#..", ".##"}, 'D': {"##.", "#.#", "#.#", "#.#", "##."},
	'E': {"###", "#..", "##.", "#..", "###"}, 'F': {"###", "#..", "##.", "#..", "#.."},
	'G': {".##", "#..", "#.#", "#.#", ".##"}, 'H': {"#.#", "#.#", "###", "#.#", "#.#"},
	'I': {"###", ".#.", ".#.", ".#.", "###"}, 'J': {"..#", "..#", "..#", "#.#", ".#."},
	'K': {"#.#", "#.#", "##.", "#.#", "#.#"}, 'L': {"#..", "#..", "#..", "#..", "###"},
	'M': {"#.#", "###", "###", "#.#", "#.#"}, 'N': {"##.", "#.#", "#.#", "#.#", "#.#"},
	'O': {".#.", "#.#", "#.#", "#.#", ".#."}, 'P': {"##.", "#.#", "##.", "#..", "#.."},
	'Q': {".#.", "#.#", "#.#", "##.", ".##"}, 'R': {"##.", "#.#", "##.", "#.#", "#.#"},
	'S': {".##", "#..", ".#.", "..#", "##."}, 'T': {"###", ".#.", ".#.", ".#.", ".#."},
	'U': {"#.#", "#.#", "#.#", "#.#", "###"}, 'V': {"#.#", "#.#", "#.#", "#.#", ".#."},
	'W': {"#.#", "#.#", "###", "###", "#.#"}, 'X': {"#.#", "#.#", ".#.", "#.#", "#.#"},
	'Y': {"#.#", "#.#", ".#.", ".#.", ".#."}, 'Z': {"###", "..#", ".#.", "#..", "###"},
	' ': {"...", "...", "...", "...", "..."}, '.': {"...", "...", "...", "...", ".#."},
	',': {"...", "...", "...", ".#.", "#.."}, ':': {"...", ".#.", "...", ".#.", "..."},
	'-': {"...", "...", "###", "...", "..."}, '+': {"...", ".#.", "###", ".#.", "..."},
	'/': {"..#", "..#", ".#.", "#..", "#.."}, '%': {"#.#", "..#", ".#.", "#..", "#.#"},
	'(': {".#.", "#..", "#..", "#..", ".#."}, ')': {".#.", "..#", "..#", "..#", ".#."},
	'=': {"...", "###", "...", "###", "..."}, '_': {"...", "...", "...", "...", "###"},
	'×': {"...", "#.#", ".#.", "#.#", "..."}, '\'': {".#.", ".#.", "...", "...", "..."},
	'<': {"..#", ".#.", "#..", ".#.", "..#"}, '>': {"#..", ".#.", "..#", ".#.", "#.."},
	'?': {"##.", "..#", ".#.", "...", ".#."}, '#': {"#.#", "###", "#.#", "###", "#.#"},
}

const (
	fontScale = 2
	charW     = 4 * fontScale // 3 pixels + 1 space
	charH     = 6 * fontScale
)

type canvas struct{ *image.RGBA }

func newCanvas(w, h int) canvas {
	c := canvas{image.NewRGBA(image.Rect(0, 0, w, h))}
	c.fill(0, 0, w, h, color.RGBA{0xff, 0xff, 0xff, 0xff})
	return c
}

func (c canvas) fill(x0, y0, x1, y1 int, col color.RGBA) {
	for y := max(y0, 0); y < min(y1, c.Rect.Dy()); y++ {
		for x := max(x0, 0); x < min(x1, c.Rect.Dx()); x++ {
			c.SetRGBA(x, y, col)
		}
	}
}

// line draws a 2-pixel line from (x0,y0) to (x1,y1).
func (c canvas) line(x0, y0, x1, y1 float64, col color.RGBA) {
	n := int(math.Max(math.Abs(x1-x0), math.Abs(y1-y0))) + 1
	for i := 0; i <= n; i++ {
		t := float64(i) / float64(n)
		x, y := int(x0+(x1-x0)*t), int(y0+(y1-y0)*t)
		c.fill(x, y, x+2, y+2, col)
	}
}

func textWidth(s string) int { return len([]rune(s)) * charW }

// text draws s with its top-left corner at (x, y).
func (c canvas) text(x, y int, s string, col color.RGBA) {
	for _, r := range strings.ToUpper(s) {
		g, ok := glyphs[r]
		if !ok {
			g = glyphs['?']
		}
		for gy, row := range g {
			for gx, p := range row {
				if p == '#' {
					c.fill(x+gx*fontScale, y+gy*fontScale, x+(gx+1)*fontScale, y+(gy+1)*fontScale, col)
				}
			}
		}
		x += charW
	}
}

func (c canvas) save(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if err := png.Encode(w, c.RGBA); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

var (
	black   = color.RGBA{0x20, 0x20, 0x20, 0xff}
	gridCol = color.RGBA{0xe4, 0xe4, 0xe4, 0xff}
	palette = []color.RGBA{
		{0x1f, 0x77, 0xb4, 0xff}, {0xff, 0x7f, 0x0e, 0xff}, {0x2c, 0xa0, 0x2c, 0xff}, {0xd6, 0x27, 0x28, 0xff},
		{0x94, 0x67, 0xbd, 0xff}, {0x8c, 0x56, 0x4b, 0xff}, {0xe3, 0x77, 0xc2, 0xff}, {0x7f, 0x7f, 0x7f, 0xff},
	}
)

// niceStep returns a 1/2/5×10^k tick step giving about n ticks up to max.
func niceStep(maxV float64, n int) float64 {
	if maxV <= 0 {
		return 1
	}
	raw := maxV / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func tickLabel(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
}

type series struct {
	name   string
	points [][2]float64 // x, y
	marks  []float64    // x positions marked with a vertical tick (e.g. kills)
}

// lineChart draws series over [0, xmax]×[0, ymax] with axes, grid, legend
// and title.
func lineChart(path, title, xLabel, yLabel string, ymax float64, ss []series) error {
	const w, h, left, right, top, bottom = 900, 480, 70, 20, 50, 60
	c := newCanvas(w, h)
	xmax := 0.0
	for _, s := range ss {
		for _, p := range s.points {
			xmax = math.Max(xmax, p[0])
		}
	}
	if xmax == 0 {
		xmax = 1
	}
	pw, ph := float64(w-left-right), float64(h-top-bottom)
	px := func(x float64) float64 { return float64(left) + x/xmax*pw }
	py := func(y float64) float64 { return float64(top) + ph - y/ymax*ph }
	xs, ys := niceStep(xmax, 8), niceStep(ymax, 5)
	for v := 0.0; v <= xmax*1.0001; v += xs {
		x := int(px(v))
		c.fill(x, top, x+1, h-bottom, gridCol)
		l := tickLabel(v)
		c.text(x-textWidth(l)/2, h-bottom+8, l, black)
	}
	for v := 0.0; v <= ymax*1.0001; v += ys {
		y := int(py(v))
		c.fill(left, y, w-right, y+1, gridCol)
		l := tickLabel(v)
		c.text(left-8-textWidth(l), y-charH/2, l, black)
	}
	c.fill(left, top, left+2, h-bottom, black)
	c.fill(left, h-bottom, w-right, h-bottom+2, black)
	for i, s := range ss {
		col := palette[i%len(palette)]
		for j := 1; j < len(s.points); j++ {
			a, b := s.points[j-1], s.points[j]
			c.line(px(a[0]), py(a[1]), px(b[0]), py(b[1]), col)
		}
		for _, m := range s.marks { // dashed vertical lines
			x := int(px(m))
			for y := top; y < h-bottom; y += 8 {
				c.fill(x, y, x+2, y+4, col)
			}
		}
		ly := top + 10 + i*(charH+6)
		c.fill(left+14, ly+2, left+34, ly+charH-4, col)
		c.text(left+40, ly, s.name, black)
	}
	c.text((w-textWidth(title))/2, 16, title, black)
	c.text(left+int(pw)/2-textWidth(xLabel)/2, h-bottom+30, xLabel, black)
	c.text(8, top-22, yLabel, black)
	return c.save(path)
}

type bar struct {
	label string
	value float64
	group int // colour index
}

// barChart draws one horizontal bar per row, labelled on the left and with
// its value at the end; legend names the colour groups.
func barChart(path, title, unit string, bars []bar, legend []string) error {
	labelW := 0
	for _, b := range bars {
		labelW = max(labelW, textWidth(b.label))
	}
	const w, right, top, rowH = 900, 90, 50, 22
	left := labelW + 20
	h := top + len(bars)*rowH + 40 + len(legend)*(charH+6)
	c := newCanvas(w, h)
	vmax := 0.0
	for _, b := range bars {
		vmax = math.Max(vmax, b.value)
	}
	if vmax == 0 {
		vmax = 1
	}
	pw := float64(w - left - right)
	step := niceStep(vmax, 6)
	axisY := top + len(bars)*rowH
	for v := 0.0; v <= vmax*1.0001; v += step {
		x := left + int(v/vmax*pw)
		c.fill(x, top, x+1, axisY, gridCol)
		l := tickLabel(v)
		c.text(x-textWidth(l)/2, axisY+6, l, black)
	}
	for i, b := range bars {
		y := top + i*rowH
		c.text(left-10-textWidth(b.label), y+(rowH-charH)/2+2, b.label, black)
		bw := int(b.value / vmax * pw)
		c.fill(left, y+3, left+max(bw, 1), y+rowH-3, palette[b.group%len(palette)])
		c.text(left+bw+6, y+(rowH-charH)/2+2, tickLabel(math.Round(b.value*10)/10), black)
	}
	c.fill(left, top, left+2, axisY, black)
	c.text((w-textWidth(title))/2, 16, title, black)
	c.text(w-right-textWidth(unit), axisY+24, unit, black)
	for i, l := range legend {
		ly := axisY + 24 + i*(charH+6)
		c.fill(left, ly+2, left+20, ly+charH-4, palette[i%len(palette)])
		c.text(left+26, ly, l, black)
	}
	return c.save(path)
}
