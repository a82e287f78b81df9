#!/bin/sh
# The third review of the forty-sixth session's changes: SAGA_TREE=DIR sh run.sh (OK or DEFECT lines).
cd "$(dirname "$0")"
for s in seq_hostile seq_e2e workers_resumed config_blame_yaml_dns stream_null; do timeout 300 python3 "$s.py"; done
