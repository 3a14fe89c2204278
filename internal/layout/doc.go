// Package layout holds repository-wide checks: the one-way import rules
// between vabc's packages, the absence of cgo, and that Android.bp declares
// every package and binary, and that git tracks no build output (ELF and
// other binaries, objects). It has no code of its own, only tests.
package layout
