# ruff: noqa
import os

os.makedirs("/tmp/saga-review45c", exist_ok=True)
# Item 5: a stateless Responses conversation (whole history as input) stays one session on one replica,
# with --workers 2, whole and streamed answers, tool calls with reasoning items, re-sent items with extra fields.
import sys, json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

fakes = [start_fake(p) for p in (27121, 27122, 27123)]
saga = start_saga_multi(27021, [27121, 27122, 27123], ["--workers", "2"])


def call(inp, stream=False, tools=False):
    body = {"model": "fake", "input": inp, "store": False, "instructions": "You are terse."}
    if stream:
        body["stream"] = True
    if tools:
        body["tools"] = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    st, hs, data = req(27021, "POST", "/v1/responses", body)
    out = sse_final(data)["output"] if stream else json.loads(data)["output"]
    return hget(hs, "X-Session-ID"), hget(hs, "X-Saga-Replica"), out


results = {}
try:
    for variant in ("whole", "stream", "tools", "tools-stream"):
        stream = variant.endswith("stream")
        tools = variant.startswith("tools")
        inp = [{"role": "user", "content": f"Hi, variant {variant}, start {time.time()}"}]
        seen = []
        for turn in range(5):
            sid, rep, out = call(inp, stream, tools and turn % 2 == 0)
            seen.append((sid, rep))
            inp = (
                inp + out
            )  # the items as answered: ids, status, annotations, reasoning included (as the Agents SDK does)
            for item in out:
                if item["type"] == "function_call":
                    inp.append(
                        {"type": "function_call_output", "call_id": item["call_id"], "output": "sunny"}
                    )
            if not any(i["type"] == "function_call" for i in out):
                inp.append({"role": "user", "content": f"turn {turn + 1}"})
        results[variant] = seen
finally:
    stop(saga)
    for f in fakes:
        f.terminate()
        f.wait()
bad = {v: s for v, s in results.items() if len(set(s)) != 1}
if bad:
    print(
        "DEFECT: a stateless conversation split: "
        + "; ".join(f"{v}: " + ", ".join(f"{a[:22]}..@{b[-5:]}" for a, b in s) for v, s in bad.items())
    )
else:
    print(
        "OK: 5-turn stateless conversations (whole, stream, tools with reasoning items) kept one session and replica with --workers 2"
    )
