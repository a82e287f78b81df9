"""docs/config.md:75-76 `GET /v1/responses/{id}` is "sent to the replica that stored that response, found as for
`previous_response_id` below", and (line 155) while that replica is down or removed a continuation "is
refused with a 503 naming it". After the replica is removed, the continuation is that 503, but GET
/v1/responses/{id} answers 404 "Response with id ... not found." (the response still exists on the replica).
Ports 23117-23118 (sims), 23020 (proxy)."""

# ruff: noqa
import os as _os, pathlib as _pl

TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44a", exist_ok=True)
import json, os, sys

sys.path.insert(0, os.path.dirname(__file__))
from lib import *

start(["sim", "--replicas", "2", "--base-port", "23117", "--time-scale", "20"], wait_port=23118)
start(
    [
        "serve",
        "--replica",
        "http://127.0.0.1:23117",
        "--replica",
        "http://127.0.0.1:23118",
        "--port",
        "23020",
        "--time-scale",
        "20",
    ],
    wait_port=23020,
)
B = "http://127.0.0.1:23020"
st, h, body = http(
    "POST", B + "/v1/responses", {"model": "saga-sim", "input": "pin me", "max_output_tokens": 5}
)
rid, rep = json.loads(body)["id"], h["X-Saga-Replica"]
print("stored", rid, "on", rep)
print("remove:", http("POST", B + "/saga/v1/replicas/remove", {"url": rep})[0])
c = http(
    "POST",
    B + "/v1/responses",
    {"model": "saga-sim", "input": "more", "previous_response_id": rid, "max_output_tokens": 5},
)
g = http("GET", B + f"/v1/responses/{rid}")
d = http("GET", rep + f"/v1/responses/{rid}")
print("continuation:", c[0], c[2][:140])
print("retrieve:    ", g[0], g[2][:140])
print("on the replica itself:", d[0])
print(
    f"DEFECT: retrieve answers {g[0]} 'not found' while the continuation answers {c[0]} naming the removed replica"
    if g[0] == 404 and c[0] == 503
    else "OK: retrieve and continuation agree"
)
