"""docs/config.md:67 `log_format: json`: "one JSON object per log line, with `request_id`, `session_id` and
`replica_id` where known." A call's access line (saga.access) carries none of them although the session and
the replica are known (the answer names both in X-Session-ID / X-Saga-Replica). Ports 23113 (sim), 23013."""

# ruff: noqa
import os as _os, pathlib as _pl

TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44a", exist_ok=True)
import json, os, sys, time

sys.path.insert(0, os.path.dirname(__file__))
from lib import *

log = "/tmp/saga-review44a/r05.log"
start(["sim", "--replicas", "1", "--base-port", "23113"], wait_port=23113)
p = start(
    ["serve", "--replica", "http://127.0.0.1:23113", "--port", "23013", "--log-format", "json"],
    wait_port=23013,
    log=log,
)
st, h, _ = http(
    "POST",
    "http://127.0.0.1:23013/v1/chat/completions",
    {"model": "saga-sim", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2},
    {"X-Session-ID": "json-log-1"},
)
print("answer headers:", {k: v for k, v in h.items() if k.lower() in ("x-session-id", "x-saga-replica")})
time.sleep(1.0)  # access lines are written in batches every 0.2 s
stop(p)
records = [json.loads(l) for l in open(log) if l.startswith("{")]
access = [
    r for r in records if r.get("logger") == "saga.access" and "chat/completions" in r.get("message", "")
]
print("access record:", access[0] if access else None)
missing = [k for k in ("request_id", "session_id", "replica_id") if not access or k not in access[0]]
print(
    f"DEFECT: the call's JSON access line lacks {missing}"
    if missing
    else "OK: the access line carries the ids"
)
