# ruff: noqa
"""The proxy's refusals on the non-chat call routes: status and error shape (OpenAI's, Anthropic's on /v1/messages)."""

import os
from pathlib import Path

import asyncio, json, time, sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *

CASES = [
    ("bad json", b'{"model": "saga-sim", ', ()),
    ("array body", b"[1,2]", ()),
    (
        "non-utf8",
        b'{"model": "saga-sim", "prompt": "\xff\xfe", "input": "\xff", "messages": [{"role":"user","content":"\xff"}], "max_tokens": 3}',
        (),
    ),
    ("deep nesting", b'{"model":"saga-sim","max_tokens":3,"x":' + b"[" * 200000 + b"]" * 200000 + b"}", ()),
    (
        "long session header",
        b'{"model":"saga-sim","max_tokens":3,"prompt":"hi","input":"hi","messages":[{"role":"user","content":"hi"}]}',
        (("X-Session-ID", "a" * 300),),
    ),
    (
        "tab in session body",
        b'{"model":"saga-sim","max_tokens":3,"session_id":"a\tb","prompt":"hi","input":"hi","messages":[{"role":"user","content":"hi"}]}',
        (),
    ),
    (
        "bad prompt_cache_key type",
        b'{"model":"saga-sim","max_tokens":3,"prompt_cache_key":5,"prompt":"hi","input":"hi","messages":[{"role":"user","content":"hi"}]}',
        (),
    ),
    (
        "ctrl char previous_response_id",
        b'{"model":"saga-sim","max_tokens":3,"prompt":"hi","input":"hi","previous_response_id":"resp_a\\u0001b","messages":[{"role":"user","content":"hi"}]}',
        (),
    ),
    (
        "nan literal",
        b'{"model":"saga-sim","max_tokens":3,"temperature":NaN,"prompt":"hi","input":"hi","messages":[{"role":"user","content":"hi"}]}',
        (),
    ),
    ("gzip body", b"\x1f\x8b", (("Content-Encoding", "gzip"),)),
]
EXPECT = {
    "bad json": 400,
    "array body": 400,
    "non-utf8": 400,
    "deep nesting": 400,
    "long session header": 400,
    "tab in session body": 400,
    "bad prompt_cache_key type": 400,
    "ctrl char previous_response_id": 400,
    "nan literal": 400,
    "oversize": 413,
    "gzip body": 415,
}


def shape_ok(route, body):
    try:
        d = json.loads(body)
    except Exception:
        return False
    if route == "/v1/messages":
        return (
            d.get("type") == "error"
            and isinstance(d.get("error"), dict)
            and {"type", "message"} <= set(d["error"])
        )
    return isinstance(d.get("error"), dict) and {"message", "type", "param", "code"} <= set(d["error"])


async def main():
    px = Proxy(26004, [], ["--simulate", "1", "--max-body-bytes", "1000000", "--time-scale", "50"])
    try:
        await px.wait_ready()
        bad = []
        seen = []
        for route in ("/v1/messages", "/v1/responses", "/v1/completions"):
            for name, body, hdrs in CASES:
                if body is None:
                    body = b'{"model":"saga-sim","prompt":"' + b"a" * 1_200_000 + b'"}'
                try:
                    st, h, b = await raw(26004, post(route, body, hdrs), timeout=10)
                except Exception as e:
                    bad.append(f"{route} {name}: no answer ({e!r})")
                    continue
                src = "replica" if "x-saga-replica" in h else "proxy"
                seen.append(f"{route.split('/')[-1]}/{name}={st}({src})")
                if src == "replica":
                    continue
                if st != EXPECT[name] or not shape_ok(route, b):
                    bad.append(f"{route} {name}: {st} {b[:160]!r}")
        inf = await in_flight(26004)
        if inf[0] != 0:
            bad.append(f"in_flight {inf}")
        if bad:
            return "DEFECT: refusals: " + " | ".join(bad)
        return "OK: refusals right status+shape on messages/responses/completions: " + ", ".join(seen)
    finally:
        px.stop()


run(main)
