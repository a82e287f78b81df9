# ruff: noqa
"""Simulator (NOW) vs real vLLM (hermes): chat with tools, n=3, tool_choice auto/none/named/required, whole and
streamed: per choice, finish reason, tool-call count, name, id present; stream: id/name on first delta only."""

import os, sys, json, subprocess, signal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

TREE = os.environ.get("TREE", "/tmp/snap54c")
VLLM = os.environ.get("VLLM_URL", "http://127.0.0.1:27900")
tools = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 12}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {
                "type": "object",
                "properties": {"tz": {"type": "string", "maxLength": 8}},
                "required": ["tz"],
            },
        },
    },
]
MODES = {
    "auto": "auto",
    "none": "none",
    "required": "required",
    "named": {"type": "function", "function": {"name": "get_time"}},
}


def summary(url, mode, stream):
    b = {
        "model": "saga-sim",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": tools,
        "tool_choice": MODES[mode],
        "n": 3,
        "temperature": 1.0,
        "max_tokens": 60,
        "stream": stream,
    }
    st, txt, _ = post(url, b, timeout=120)
    if st != 200:
        return f"{st} {txt[:100]!r}"
    out = []
    if not stream:
        for c in sorted(json.loads(txt)["choices"], key=lambda c: c["index"]):
            tc = c["message"].get("tool_calls") or []
            out.append(
                (
                    c["finish_reason"],
                    len(tc),
                    tuple(t["function"]["name"] for t in tc),
                    all(t.get("id") for t in tc),
                )
            )
        return out
    per = {}
    for e in sse_events(txt):
        for c in e.get("choices", []):
            d = per.setdefault(c["index"], {"fin": None, "names": [], "ids": 0, "argchunks": 0})
            if c.get("finish_reason"):
                d["fin"] = c["finish_reason"]
            for t in (c.get("delta") or {}).get("tool_calls") or []:
                if t.get("id"):
                    d["ids"] += 1
                fn = t.get("function") or {}
                if fn.get("name"):
                    d["names"].append(fn["name"])
                if fn.get("arguments"):
                    d["argchunks"] += 1
    return [(per[i]["fin"], per[i]["ids"], tuple(per[i]["names"])) for i in sorted(per)]


sim = subprocess.Popen(
    ["python3", "-m", "proxy", "sim", "--replicas", "1", "--base-port", "27810", "--time-scale", "50"],
    cwd=TREE,
    start_new_session=True,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.STDOUT,
)
diff = []
try:
    wait_http("http://127.0.0.1:27810/health")
    for mode in MODES:
        for stream in (False, True):
            s = summary("http://127.0.0.1:27810", mode, stream)
            v = summary(VLLM, mode, stream)
            print(f"{mode:8} {'stream' if stream else 'whole '} sim={s}\n{'':15} vllm={v}", flush=True)
            # compare shape: per choice finish reason kind and whether tool calls are present
            shape = lambda r: r if isinstance(r, str) else [(x[0], x[1] > 0) for x in r]
            if shape(s) != shape(v):
                diff.append((mode, stream))
finally:
    os.killpg(sim.pid, signal.SIGTERM)
    sim.wait(10)
print(
    ("DEFECT?" if diff else "OK"), "shape differences (finish reason, tool calls present, per choice):", diff
)
