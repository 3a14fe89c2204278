package testtool

import (
	"os"
	"os/exec"
	"testing"
)

// TestMissingFailsInCI runs a child test that needs a tool that cannot
// exist, with and without CI=true: it must skip without and fail with.
func TestMissingFailsInCI(t *testing.T) {
	if os.Getenv("TESTTOOL_CHILD") == "1" {
		Need(t, "vabc-no-such-tool-0xF1")
		t.Fatal("Need returned for a missing tool")
	}
	for _, tc := range []struct {
		ci     string
		wantOK bool
	}{{"", true}, {"true", false}} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMissingFailsInCI$", "-test.v")
		cmd.Env = append(os.Environ(), "TESTTOOL_CHILD=1", "CI="+tc.ci)
		out, err := cmd.CombinedOutput()
		if (err == nil) != tc.wantOK {
			t.Errorf("CI=%q: err %v, want ok=%v\n%s", tc.ci, err, tc.wantOK, out)
		}
	}
	if p := Need(t, "sh"); p == "" {
		t.Fatal("no path for sh")
	}
}
