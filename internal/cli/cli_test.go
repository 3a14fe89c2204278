package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"testing"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{flag.ErrHelp, 0},
		{Usagef("bad %s", "flag"), 2},
		{fmt.Errorf("create: %w", Usagef("--source is required")), 2},
		{errors.New("open x.cow: no such file"), 1},
	}
	for _, tc := range tests {
		if got := ExitCode(tc.err); got != tc.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args      []string
		nargs     int
		done      bool
		usage     bool
		wantN     int
		wantError string
	}{
		{[]string{"-n", "3", "a"}, 1, false, false, 3, ""},
		{[]string{"a", "b"}, AnyArgs, false, false, 0, ""},
		{[]string{"--help"}, 1, true, false, 0, ""},
		{[]string{"-nope"}, 1, false, true, 0, "not defined"},
		{[]string{}, 1, false, true, 0, "want 1 argument(s), got 0"},
		{[]string{"x"}, 0, false, true, 0, `unexpected argument "x"`},
	}
	for _, tc := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		n := fs.Int("n", 0, "")
		done, err := ParseFlags(fs, tc.args, tc.nargs)
		if done != tc.done || IsUsage(err) != tc.usage || (err == nil) != (tc.wantError == "") || *n != tc.wantN {
			t.Errorf("ParseFlags(%q, %d) = %v, %v (n %d)", tc.args, tc.nargs, done, err, *n)
		}
		if tc.wantError != "" && err != nil && !bytes.Contains([]byte(err.Error()), []byte(tc.wantError)) {
			t.Errorf("ParseFlags(%q): %v, want %q", tc.args, err, tc.wantError)
		}
	}
}

func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJSON(&b, map[string]any{"num_merge_ops": 3}); err != nil {
		t.Fatal(err)
	}
	if want := "{\n  \"num_merge_ops\": 3\n}\n"; b.String() != want {
		t.Errorf("WriteJSON: %q, want %q", b.String(), want)
	}
}
