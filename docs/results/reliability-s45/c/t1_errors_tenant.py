# ruff: noqa
import os

os.makedirs("/tmp/saga-review45c", exist_ok=True)
# Item 1: relayed error statuses keep the direct answer's status/body/headers; tenant isolation over the relay.
import sys, json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

fake = start_fake(27110)
keys = json.dumps({"key-a": "alice", "key-b": "bob"})
saga = start_saga(27010, 27110, ["--workers", "2"], env={"SAGA_API_KEYS": keys})
problems = []
seen_relayed = 0
try:
    A = {"Authorization": "Bearer key-a"}
    AX = {"x-api-key": "key-a"}
    B = {"Authorization": "Bearer key-b"}
    BX = {"x-api-key": "key-b"}
    for mode in ("m404", "m400", "m500", "plain"):
        st, hs, body, owner = req_pid(
            27010, "POST", "/v1/responses", {"model": "fake", "input": "mode_" + mode}, A
        )
        rid = json.loads(body)["id"]
        direct, relay = {}, {}
        for i in range(10):
            for hdr in (A, AX):
                s, h, b, wp = req_pid(27010, "GET", f"/v1/responses/{rid}", None, hdr)
                (relay if wp != owner else direct).setdefault(s, (dict((k.lower(), v) for k, v in h), b))
            for hdr in (B, BX):
                s, h, b = req(27010, "GET", f"/v1/responses/{rid}", None, hdr)
                if s != 404 or rid.encode() in b and b"not found" not in b:
                    problems.append(f"{mode}: other tenant got {s} {b[:80]!r}")
            s, h, b = req(27010, "POST", f"/v1/responses/{rid}/cancel", None, B)
            if s != 404:
                problems.append(f"{mode}: other tenant cancel got {s} {b[:80]!r}")
        seen_relayed += len(relay)
        for s in set(direct) & set(relay):
            dh, db = direct[s]
            rh, rb = relay[s]
            if db != rb:
                problems.append(f"{mode} {s}: relayed body {rb[:100]!r} != direct {db[:100]!r}")
            for k in dh:
                if (
                    k not in ("date", "server", "content-length", "transfer-encoding", "connection")
                    and k not in rh
                ):
                    problems.append(f"{mode} {s}: relayed answer lacks header {k}={dh[k]!r}")
        if set(direct) != set(relay) and direct and relay:
            problems.append(f"{mode}: direct statuses {sorted(direct)} relayed {sorted(relay)}")
finally:
    stop(saga)
    fake.terminate()
    fake.wait()
if seen_relayed == 0:
    print("DEFECT?: no relayed answer seen (heuristic failed)")
elif problems:
    print("DEFECT: " + " | ".join(sorted(set(problems))[:8]))
else:
    print(
        "OK: 404/400/500/200 relayed same status, body and headers as direct; other tenant always 404 (Bearer and x-api-key)"
    )
