"""docs/config.md `workers`: "proxy processes sharing the port (SO_REUSEPORT)". A second, unrelated
`saga serve --workers 2` on a port a first `--workers 2` instance already serves starts without error
(a single-process `saga serve` on that port is refused: "address already in use"), and the two proxies then
split the clients' connections between them: here each proxy has a different replica, and calls of the same
session land on both. Ports 23115-23116 (sims), 23019 (both proxies)."""

# ruff: noqa
import os as _os, pathlib as _pl

TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44a", exist_ok=True)
import collections, os, sys, time

sys.path.insert(0, os.path.dirname(__file__))
from lib import *

start(["sim", "--replicas", "2", "--base-port", "23115", "--time-scale", "20"], wait_port=23116)
start(["serve", "--replica", "http://127.0.0.1:23115", "--port", "23019", "--workers", "2"], wait_port=23019)
time.sleep(1)
second = start(
    ["serve", "--replica", "http://127.0.0.1:23116", "--port", "23019", "--workers", "2"],
    log="/tmp/saga-review44a/r08_second.log",
)
time.sleep(8)
print(
    "second instance still running:",
    second.poll() is None,
    "| its log:",
    open("/tmp/saga-review44a/r08_second.log").read().strip().splitlines()[:1],
)
seen = collections.Counter()
for i in range(40):
    st, h, _ = http(
        "POST",
        "http://127.0.0.1:23019/v1/chat/completions",
        {"model": "saga-sim", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1},
        {"X-Session-ID": "one-session", "Connection": "close"},
    )
    seen[h.get("X-Saga-Replica")] += 1
print("replicas answering one session's 40 calls:", dict(seen))
print(
    "DEFECT: a second --workers instance took the same port; one session's calls went to both"
    if second.poll() is None and len(seen) > 1
    else "OK: the second instance was refused (port in use)"
)
