#!/bin/sh
# The forty-sixth session's review scripts against a compiled tree: SAGA_TREE=DIR sh run.sh
# (a/: the docs against the code; b/: the session's changes). Each prints OK or DEFECT lines.
here=$(dirname "$0")
for s in "$here"/a/*.sh; do bash "$s"; done
for s in seq_numbers seq_hostile_and_stop access_ids tokens workers_tokens label_bound relay_access text_access; do
  (cd "$here/b" && timeout 300 python3 "$s.py")
done
