#!/bin/bash
# docs/config.md:11-12 / proxy/serve_options.py `_said_with_its_variable`: a refused value from SAGA_<KEY> is said
# with the variable (e.g. "SAGA_WORKERS: workers must be between 1 and 256", "SAGA_TIME_SCALE: time_scale must be > 0").
# Two paths drop the variable: SAGA_POLICY (message starts "unknown policy") and SAGA_TIME_SCALE with --simulate.
cd "${SAGA_TREE:-/tmp/snap46}"
chk() { desc=$1; var=$2; shift 2
  out=$(timeout 20 "$@" 2>&1 </dev/null); rc=$?; last=$(echo "$out" | grep -v '^\s*$' | tail -1)
  if echo "$last" | grep -q "$var"; then echo "OK: $desc -> $last"; else echo "DEFECT: $desc -> rc=$rc '$last' (does not name $var)"; fi
}
chk "SAGA_TIME_SCALE=0 with --replica" SAGA_TIME_SCALE env SAGA_TIME_SCALE=0 python3 -m proxy serve --replica http://127.0.0.1:27901
chk "SAGA_TIME_SCALE=0 with --simulate 1" SAGA_TIME_SCALE env SAGA_TIME_SCALE=0 python3 -m proxy serve --simulate 1
chk "SAGA_SERVER=nosuch" SAGA_SERVER env SAGA_SERVER=nosuch python3 -m proxy serve --replica http://127.0.0.1:27901
chk "SAGA_POLICY=nosuch" SAGA_POLICY env SAGA_POLICY=nosuch python3 -m proxy serve --replica http://127.0.0.1:27901
