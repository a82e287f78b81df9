# ruff: noqa
"""Simulator vs real vLLM (hermes tool parser, VLLM_URL): a chat call with tools, tool_choice "required", n=3,
temperature 1: are the choices' tool calls distinct (ids, arguments), whole and streamed?"""

import os, sys, json, subprocess, signal, contextlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *

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
    }
]


def calls(url, stream):
    b = {
        "model": "saga-sim",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": tools,
        "tool_choice": "required",
        "n": 3,
        "temperature": 1.0,
        "max_tokens": 120,
        "stream": stream,
    }
    st, txt, _ = post(url, b, timeout=120)
    if st != 200:
        return st, txt[:200]
    if not stream:
        return st, [
            (c["message"]["tool_calls"][0]["id"], c["message"]["tool_calls"][0]["function"]["arguments"])
            if c["message"].get("tool_calls")
            else None
            for c in json.loads(txt)["choices"]
        ]
    ids, args = {}, {}
    for e in sse_events(txt):
        for c in e.get("choices", []):
            for tc in (c.get("delta") or {}).get("tool_calls") or []:
                if tc.get("id"):
                    ids[c["index"]] = tc["id"]
                args[c["index"]] = args.get(c["index"], "") + (
                    (tc.get("function") or {}).get("arguments") or ""
                )
    return st, [(ids.get(i), args.get(i)) for i in sorted(set(ids) | set(args))]


sim = subprocess.Popen(
    ["python3", "-m", "proxy", "sim", "--replicas", "1", "--base-port", "27811", "--time-scale", "50"],
    cwd=AFTER,
    start_new_session=True,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.STDOUT,
)
try:
    wait_http("http://127.0.0.1:27811/health")
    out = {}
    for who, url in (
        ("sim", "http://127.0.0.1:27811"),
        ("vllm", os.environ.get("VLLM_URL", "http://127.0.0.1:27900")),
    ):
        for stream in (False, True):
            st, r = calls(url, stream)
            distinct_ids = len({x[0] for x in r if x}) if isinstance(r, list) else None
            out[(who, stream)] = distinct_ids
            print(who, "stream" if stream else "whole", st, r, "distinct ids:", distinct_ids, flush=True)
finally:
    os.killpg(sim.pid, signal.SIGTERM)
    sim.wait(10)
bad = [k for k in out if k[0] == "sim" and out[k] != out.get(("vllm", k[1]))]
print(
    "DEFECT" if bad else "OK",
    "tool calls across n=3 choices, distinct tool-call ids: sim",
    {k[1]: v for k, v in out.items() if k[0] == "sim"},
    "vllm",
    {k[1]: v for k, v in out.items() if k[0] == "vllm"},
)
