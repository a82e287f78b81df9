#!/bin/bash
# usage (from the repo root): docs/results/saga-v16/run_cells.sh OUT_DIR "VARIANT..." CELL...
# CELL: a name in cells.txt (the declared point's nine cells on 16 x llama3-70b-tp4-a100, each seed's own
# KV scale and rate, as in docs/results/saga-v3/); writes OUT_DIR/admission-16x70b-CELL.json
set -euo pipefail
here=$(dirname "$0")
out=$1 variants=$2
shift 2
mkdir -p "$out"
for cell in "$@"; do
  args=$(grep "^$cell " "$here/cells.txt" | cut -d' ' -f2-)
  # shellcheck disable=SC2086
  python3 "$here/explore.py" $variants -- $args --json "$out/admission-16x70b-$cell.json"
done
