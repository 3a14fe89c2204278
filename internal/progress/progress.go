// Package progress draws the one-line progress bars of vabc's command-line
// tools. A bar draws only when its writer is a terminal, at most ten times a
// second, so output redirected to a file or a pipe stays clean.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// Bar is one progress line. The zero of *Bar (nil) is a valid bar that draws
// nothing. Update is safe for concurrent use.
type Bar struct {
	w     io.Writer
	label string
	count bool // items, not bytes
	start time.Time

	mu    sync.Mutex // guards the fields that follow
	last  time.Time
	shown bool
}

// New returns a bar of bytes labelled label drawing on w, or nil when w is
// not a terminal.
func New(w io.Writer, label string) *Bar {
	if !isTerminal(w) {
		return nil
	}
	return newBar(w, label, false)
}

// NewCount is New for a count of items (ops, blocks) instead of bytes.
func NewCount(w io.Writer, label string) *Bar {
	if !isTerminal(w) {
		return nil
	}
	return newBar(w, label, true)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newBar(w io.Writer, label string, count bool) *Bar {
	return &Bar{w: w, label: label, count: count, start: time.Now()}
}

// Update reports done of total bytes (or items, for NewCount).
func (b *Bar) Update(done, total int64) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if now.Sub(b.last) < 100*time.Millisecond && done < total {
		return
	}
	b.last = now
	frac := 1.0
	if total > 0 {
		frac = min(float64(done)/float64(total), 1)
	}
	const width = 30
	n := int(frac * width)
	secs := max(now.Sub(b.start).Seconds(), 1e-9)
	label := b.label
	if label != "" {
		label += " "
	}
	bar := strings.Repeat("#", n) + strings.Repeat("-", width-n)
	if b.count {
		fmt.Fprintf(b.w, "\r%s[%s] %3.0f%% %d/%d %.0f/s", label, bar, frac*100, done, total, float64(done)/secs)
	} else {
		fmt.Fprintf(b.w, "\r%s[%s] %3.0f%% %d/%d MiB %7.1f MB/s", label, bar, frac*100, done>>20, total>>20, float64(done)/1e6/secs)
	}
	b.shown = true
}

// Finish ends the bar's line, if one was drawn.
func (b *Bar) Finish() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.shown {
		fmt.Fprintln(b.w)
		b.shown = false
	}
}
