"""docs/observability.md lists `saga_rejected_total`, `saga_retries_total`, `saga_client_disconnects_total` (no
labels). After ordinary successful calls /metrics has their HELP/TYPE lines but no sample (not even 0), so
e.g. the dashboard's `sum(rate(saga_rejected_total[1m]))` (deploy/grafana/saga-dashboard.json) shows "No data".
Ports 23111 (sim), 23011 (proxy)."""

# ruff: noqa
import os as _os, pathlib as _pl

TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44a", exist_ok=True)
import os, sys

sys.path.insert(0, os.path.dirname(__file__))
from lib import *

start(["sim", "--replicas", "1", "--base-port", "23111"], wait_port=23111)
start(["serve", "--replica", "http://127.0.0.1:23111", "--port", "23011"], wait_port=23011)
for i in range(3):
    http(
        "POST",
        "http://127.0.0.1:23011/v1/chat/completions",
        {"model": "saga-sim", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2},
        {"X-Session-ID": f"s{i}"},
    )
_, _, text = http("GET", "http://127.0.0.1:23011/metrics")
lines = text.splitlines()
absent = []
for name in ["saga_rejected_total", "saga_retries_total", "saga_client_disconnects_total"]:
    has_type = any(l.startswith(f"# TYPE {name}") for l in lines)
    has_sample = any(l.split("{")[0].split(" ")[0] == name for l in lines if not l.startswith("#"))
    print(f"{name}: TYPE line {has_type}, sample {has_sample}")
    if not has_sample:
        absent.append(name)
print(
    f"DEFECT: unlabelled counters with no sample (expected `{absent[0]} 0.0`): {absent}"
    if absent
    else "OK: every unlabelled counter has a sample"
)
