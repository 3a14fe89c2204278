package proto

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTrailingEmptyFields: AOSP's parser ignores empty trailing fields, so
// "start,system," is start,system and a 5-field init may end in commas.
func TestTrailingEmptyFields(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"cow", "src", "base"} {
		if err := os.WriteFile(filepath.Join(dir, n), make([]byte, 8192), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	paths := filepath.Join(dir, "cow") + "," + filepath.Join(dir, "src") + "," + filepath.Join(dir, "base")
	s := NewServer(newMemDaemon(), nil)
	for _, tc := range []struct{ msg, want string }{
		{"query,", ReplyActive},
		{"init,system," + paths + ",", "success,16"},
		{"start,system,,", ReplySuccess},
		{"getstatus,system,", StatusSnapshot},
		{"init,vendor," + filepath.Join(dir, "cow") + "," + filepath.Join(dir, "src") + ",,", ReplyFail}, // 4 fields: legacy form
		{",", ReplyFail},
	} {
		if got, _ := s.Dispatch(tc.msg); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%q → %q, want %q", tc.msg, got, tc.want)
		}
	}
}
