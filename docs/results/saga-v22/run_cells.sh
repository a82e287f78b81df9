#!/bin/bash
# usage (from the repo root): docs/results/saga-v22/run_cells.sh OUT_DIR "VARIANT..." CELL...
# CELL: a name in ../saga-v16/cells.txt (the declared point's nine cells on 16 x llama3-70b-tp4-a100);
# writes OUT_DIR/wait-16x70b-CELL.json and OUT_DIR/wait-16x70b-CELL.txt (the printed report)
set -euo pipefail
here=$(dirname "$0")
out=$1 variants=$2
shift 2
mkdir -p "$out"
for cell in "$@"; do
  args=$(grep "^$cell " "$here/../saga-v16/cells.txt" | cut -d' ' -f2-)
  # shellcheck disable=SC2086
  SAGA_PURE_PYTHON=1 python3 "$here/wait_bound.py" $variants -- $args --jobs 1 \
    --json "$out/wait-16x70b-$cell.json" | tee "$out/wait-16x70b-$cell.txt"
done
