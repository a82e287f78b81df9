# ruff: noqa
"""api_keys with Anthropic clients: x-api-key accepted on /v1/messages, a wrong one a 401 in Anthropic's shape,
and the client's key never reaches the replica (x-api-key or Authorization); upstream_api_key sent instead."""

import os
from pathlib import Path

import asyncio, json, sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *

BODY = b'{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"hi"}],"model":"fake","stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":1}}'


def handler(m, p, h, b):
    r = basic_routes(m, p, h, b)
    if r:
        return r
    return whole(200, BODY)


async def main():
    cfg = str(Path(__file__).resolve().parent) + "/t09.yaml"
    open(cfg, "w").write("api_keys:\n  sk-ant-alpha: alpha\n  sk-beta: beta\nupstream_api_key: UPKEY\n")
    fake = Fake(26209, handler)
    await fake.start()
    px = Proxy(26009, ["http://127.0.0.1:26209"], ["--config", cfg])
    try:
        await px.wait_ready()
        probs = []
        res = []
        req = json.dumps({"model": "fake", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
        cases = [
            ("x-api-key ok", [("x-api-key", "sk-ant-alpha"), ("anthropic-version", "2023-06-01")], 200),
            ("x-api-key wrong", [("x-api-key", "sk-nope")], 401),
            ("none", [], 401),
            ("bearer ok", [("Authorization", "Bearer sk-beta")], 200),
            (
                "both, bearer ok, x-api-key other tenant",
                [("Authorization", "Bearer sk-beta"), ("x-api-key", "sk-ant-alpha")],
                200,
            ),
        ]
        for name, hdrs, want in cases:
            n = len(fake.requests)
            st, h, b = await raw(26009, post("/v1/messages", req, hdrs))
            res.append(f"{name}={st}")
            if st != want:
                probs.append(f"{name}: {st} (want {want}) {b[:120]!r}")
            if st >= 400:
                d = json.loads(b)
                if not (d.get("type") == "error" and d["error"].get("type") == "authentication_error"):
                    probs.append(f"{name}: refusal not Anthropic authentication_error: {b[:150]!r}")
            for mm, p, hh, bb in fake.requests[n:]:
                vals = " ".join(f"{k}={v}" for k, v in hh.items())
                if "sk-ant-alpha" in vals or "sk-beta" in vals or "sk-nope" in vals:
                    probs.append(
                        f"{name}: client key forwarded upstream: {[(k, v) for k, v in hh.items() if 'sk-' in v]}"
                    )
                if hh.get("authorization") != "Bearer UPKEY":
                    probs.append(f"{name}: upstream auth {hh.get('authorization')!r}")
        inf = await in_flight(26009)
        if inf[0]:
            probs.append(f"in_flight {inf}")
        if probs:
            return "DEFECT: /v1/messages with api_keys: " + "; ".join(probs)
        return (
            "OK: /v1/messages api_keys: "
            + ", ".join(res)
            + "; refusals Anthropic authentication_error; no client key upstream, upstream key sent"
        )
    finally:
        px.stop()
        await fake.stop()


run(main)
