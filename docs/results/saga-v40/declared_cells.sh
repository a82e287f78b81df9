#!/bin/sh
# The nine declared 16 x 70B cells (args in docs/results/saga-v16/cells.txt), `saga` alone: its TCT geomean
# per cell from the JSON. Usage: sh docs/results/saga-v40/declared_cells.sh > docs/results/saga-v40/declared-cells.txt
cd "$(dirname "$0")/../../.."
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ), $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' + working tree'): python -m proxy.cli bench des ARGS --policies saga --jobs 1 --json F"
tmp=$(mktemp -d)
while read -r name args; do
    # shellcheck disable=SC2086
    python3 -m proxy.cli bench des $args --policies saga --jobs 1 --json "$tmp/$name.json" > /dev/null
    python3 -c "import json,sys; print(sys.argv[2], round(json.load(open(sys.argv[1]))['policies']['saga']['tct_geomean_s'], 4))" "$tmp/$name.json" "$name"
done < docs/results/saga-v16/cells.txt
rm -rf "$tmp"
