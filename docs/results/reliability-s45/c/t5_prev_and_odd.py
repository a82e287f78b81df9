# ruff: noqa
import os

os.makedirs("/tmp/saga-review45c", exist_ok=True)
# Item 5: previous_response_id still follows its response's session; odd inputs (deep, unknown item types,
# non-object items, huge) are answered, not 500, and the proxy stays up; /v1/completions unaffected (own session each).
import sys, json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

fakes = [start_fake(p) for p in (27141, 27142, 27143)]
saga = start_saga_multi(27041, [27141, 27142, 27143], ["--workers", "2"])
problems = []
try:
    st, hs, data = req(
        27041,
        "POST",
        "/v1/responses",
        {"model": "fake", "input": [{"role": "user", "content": f"p {time.time()}"}]},
    )
    sid, rep, rid = hget(hs, "X-Session-ID"), hget(hs, "X-Saga-Replica"), json.loads(data)["id"]
    for i in range(6):
        st, hs, data = req(
            27041,
            "POST",
            "/v1/responses",
            {
                "model": "fake",
                "previous_response_id": rid,
                "input": [{"role": "user", "content": f"more {i}"}],
            },
        )
        if (hget(hs, "X-Session-ID"), hget(hs, "X-Saga-Replica")) != (sid, rep):
            problems.append(
                f"previous_response_id turn {i}: {hget(hs, 'X-Session-ID')}@{hget(hs, 'X-Saga-Replica')} != {sid}@{rep}"
            )
        rid = json.loads(data)["id"]
    odd = {
        "deep": None,
        "unknown": [
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {"type": "weird", "x": {"y": 1}},
            {"role": "user", "content": "hi"},
        ],
        "scalars": [1, "two", None, {"role": "user", "content": "x"}],
        "object": {"role": "user", "content": "x"},
        "null_role": [{"type": "message", "role": None, "content": None}],
        "fc_first": [{"type": "function_call", "name": 5, "arguments": {"a": 1}}],
    }
    for name, inp in odd.items():
        try:
            if inp is None:
                c = http.client.HTTPConnection("127.0.0.1", 27041, timeout=15)
                c.request(
                    "POST",
                    "/v1/responses",
                    body='{"model":"fake","input":[{"role":"user","content":'
                    + "[" * 5000
                    + "]" * 5000
                    + "}]}",
                    headers={"Content-Type": "application/json"},
                )
                r = c.getresponse()
                st, data = r.status, r.read()
                c.close()
            else:
                st, hs, data = req(27041, "POST", "/v1/responses", {"model": "fake", "input": inp})
        except Exception as e:
            problems.append(f"{name}: {type(e).__name__}")
            continue
        if st >= 500:
            problems.append(f"{name}: {st} {data[:100]!r}")
    sids = set()
    for i in range(4):
        st, hs, data = req(27041, "POST", "/v1/completions", {"model": "fake", "prompt": "same prompt"})
        sids.add(hget(hs, "X-Session-ID"))
    st, hs, data = req(27041, "GET", "/health")
    if st != 200:
        problems.append(f"health after: {st}")
finally:
    stop(saga)
    for f in fakes:
        f.terminate()
        f.wait()
if problems:
    print("DEFECT: " + " | ".join(problems))
else:
    print(
        f"OK: previous_response_id kept its session and replica over 6 turns; odd inputs {list(odd)} answered below 500; completions sessions {len(sids)} of 4 calls"
    )
