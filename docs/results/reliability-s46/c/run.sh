#!/bin/sh
# The second review of the forty-sixth session's changes: SAGA_TREE=DIR sh run.sh (OK or DEFECT lines).
cd "$(dirname "$0")"
for s in seq_review stop_resumed xsid_errors config_blame msg_usage sim_lax; do timeout 300 python3 "$s.py"; done
