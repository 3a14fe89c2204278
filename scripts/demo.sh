#!/usr/bin/env bash
# make demo: build a COW image from generated data and inspect it.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "demo: nothing to show yet"
