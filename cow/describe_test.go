package cow

import (
	"strings"
	"testing"
)

func TestDescribe(t *testing.T) {
	r := mustParse(t, workedExample(t), nil)
	var b strings.Builder
	if err := r.Describe(&b); err != nil {
		t.Fatal(err)
	}
	want := `header            0x0         38 bytes  v2.0
scratch          0x26    2097152 bytes
cluster 0    0x200026       8292 bytes  5 ops, 8192 payload bytes at 0x20008a
cluster 1    0x20208a        100 bytes  5 ops, 0 payload bytes at 0x2020ee
cluster 2    0x2020ee        100 bytes  5 ops, 0 payload bytes at 0x202152
cluster 3    0x202152        100 bytes  3 ops, 0 payload bytes at 0x2021b6
footer       0x20218e         84 bytes  num_ops 18, ops_size 360
end          0x2021e2
`
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}

	v := v3Basic()
	v.h.ResumePointCount = 0
	r = mustParse(t, v.build(t), nil)
	b.Reset()
	r.Describe(&b)
	for _, s := range []string{"sequence", "resume", "5 of 10 slots used", "data       ", "end"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("v3 description lacks %q:\n%s", s, b.String())
		}
	}
}
