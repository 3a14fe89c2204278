#!/usr/bin/env bash
# Runs every Go fuzz target in the module for $1 (default 60s) each.
# Seeds live in <pkg>/testdata/fuzz/<FuzzName>/ and run in plain `go test` too.
set -euo pipefail
cd "$(dirname "$0")/.."
t="${1:-60s}"
status=0
while IFS= read -r pkg; do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "== $pkg $f ($t)"
		if ! go test -run='^$' -fuzz="^$f\$" -fuzztime="$t" "$pkg"; then status=1; fi
	done
done < <(go list ./...)
exit $status
