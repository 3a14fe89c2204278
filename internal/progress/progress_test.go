package progress

import (
	"bytes"
	"strings"
	"testing"
)

func TestBar(t *testing.T) {
	var b bytes.Buffer
	p := newBar(&b, "test", false)
	p.Update(50<<20, 100<<20)
	p.Update(100<<20, 100<<20)
	p.Finish()
	out := b.String()
	if !strings.Contains(out, "test [") || !strings.Contains(out, "100%") || !strings.Contains(out, "100/100 MiB") || !strings.HasSuffix(out, "\n") {
		t.Fatalf("bar output %q", out)
	}
	var c bytes.Buffer
	ops := newBar(&c, "merge", true)
	ops.Update(7, 7)
	ops.Finish()
	if !strings.Contains(c.String(), "merge [") || !strings.Contains(c.String(), "7/7 ") || strings.Contains(c.String(), "MB/s") {
		t.Fatalf("count bar output %q", c.String())
	}
	var quiet bytes.Buffer
	q := New(&quiet, "x") // a buffer is not a terminal
	q.Update(1, 2)
	q.Finish()
	if q != nil || NewCount(&quiet, "y") != nil || quiet.Len() != 0 {
		t.Fatalf("progress on a non-terminal: %q", quiet.String())
	}
}
