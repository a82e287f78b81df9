#!/bin/sh
# Both reviewers' scripts, each once, against a compiled checkout: SAGA_TREE=<checkout> sh rerun_reviews.sh
# (the scripts keep their logs in /tmp/rev48a and /tmp/rev48b; ports 22000-23999).
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p /tmp/rev48a /tmp/rev48b
for d in "$here/a" "$here/b"; do
  for f in "$d"/d0*.py; do
    echo "== $(basename "$d")/$(basename "$f")"
    (cd "$d" && SAGA_TREE=${SAGA_TREE:?compiled checkout} timeout 400 python3 "$f" 2>&1 | tail -1)
  done
done
