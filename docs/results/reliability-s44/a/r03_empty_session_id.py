"""docs/config.md:170-171 (Session identity): "Values: 1 to 256 printable ASCII characters, no leading or
trailing space; anything else is a 400 that names the field." An empty `X-Session-ID` header, an empty body
`session_id` or `prompt_cache_key` is instead taken as absent: 200, and the proxy infers a session
(X-Session-ID: conv-...). Ports 23112 (sim), 23012 (proxy)."""

# ruff: noqa
import os as _os, pathlib as _pl

TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44a", exist_ok=True)
import http.client as hc, json, os, sys

sys.path.insert(0, os.path.dirname(__file__))
from lib import *

start(["sim", "--replicas", "1", "--base-port", "23112"], wait_port=23112)
start(["serve", "--replica", "http://127.0.0.1:23112", "--port", "23012"], wait_port=23012)


def call(headers, extra):
    c = hc.HTTPConnection("127.0.0.1", 23012, timeout=10)
    body = {"model": "saga-sim", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2, **extra}
    c.request(
        "POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json", **headers}
    )
    r = c.getresponse()
    r.read()
    return r.status, r.getheader("X-Session-ID")


bad = []
for label, headers, extra in [
    ("header X-Session-ID: ''", {"X-Session-ID": ""}, {}),
    ("body session_id ''", {}, {"session_id": ""}),
    ("body prompt_cache_key ''", {}, {"prompt_cache_key": ""}),
    ("control: header X-Session-ID 257 chars", {"X-Session-ID": "a" * 257}, {}),
]:
    status, sid = call(headers, extra)
    print(f"{label}: {status}, X-Session-ID answered: {sid}")
    if status != 400 and "control" not in label:
        bad.append(label)
print(
    f"DEFECT: empty identity values accepted (not 400): {bad}"
    if bad
    else "OK: empty identity values are refused with 400"
)
