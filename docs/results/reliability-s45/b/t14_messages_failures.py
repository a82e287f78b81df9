# ruff: noqa
"""/v1/messages failure shapes: a stream stalled past stream_idle_timeout_s, a whole answer cut mid-body, and no
healthy replica: Anthropic's error shape / `event: error`, stream terminated, in_flight back to 0."""

import os
from pathlib import Path

import asyncio, json, sys, time

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *
from midstream import MSG_EV

MODE = {"m": "stall"}


def handler(m, p, h, b):
    r = basic_routes(m, p, h, b)
    if r:
        return r
    if MODE["m"] == "stall":
        return stream(MSG_EV[:2])[: -0 or None] + [("sleep", 4.0)] + [("data", MSG_EV[2])]
    body = b'{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"hi hi hi hi"}],"model":"fake","stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":4}}'
    return [
        ("head", 200, [("content-type", "application/json"), ("content-length", str(len(body)))], False),
        ("data", body[:60]),
        ("cut",),
    ]


def anth(b):
    try:
        d = json.loads(b)
        return d.get("type") == "error" and "type" in d["error"] and "message" in d["error"]
    except Exception:
        return False


async def main():
    fake = Fake(26216, handler)
    await fake.start()
    px = Proxy(26014, ["http://127.0.0.1:26216"], ["--stream-idle-timeout-s", "1", "--max-retries", "0"])
    try:
        await px.wait_ready()
        probs = []
        info = []
        req = {
            "model": "fake",
            "max_tokens": 5,
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        }
        t0 = time.time()
        st, h, b = await raw(26014, post("/v1/messages", json.dumps(req)), timeout=8)
        last = b.split(b"\n\n")[-2] if b.count(b"\n\n") else b
        info.append(f"stall: {st} in {time.time() - t0:.1f}s last {last[:110]!r}")
        if not (last.startswith(b"event: error\ndata: ") and anth(last.split(b"data: ", 1)[1])):
            probs.append(f"stall: last event {last[:200]!r}")
        MODE["m"] = "cut"
        req["stream"] = False
        st, h, b = await raw(26014, post("/v1/messages", json.dumps(req)), timeout=8)
        info.append(f"cut whole: {st} {b[:100]!r}")
        if st != 502 or not anth(b):
            probs.append(f"cut whole answer: {st} {b[:200]!r}")
        await asyncio.sleep(0.3)
        inf = await in_flight(26014)
        if inf[0] or any(inf[1]):
            probs.append(f"in_flight {inf}")
        await fake.stop()  # no replica now
        await asyncio.sleep(2.5)
        st, h, b = await raw(26014, post("/v1/messages", json.dumps(req)), timeout=15)
        info.append(f"no replica: {st} {b[:100]!r}")
        if st not in (502, 503) or not anth(b):
            probs.append(f"no replica: {st} {b[:200]!r}")
        inf = await in_flight(26014)
        if inf[0] or any(inf[1]):
            probs.append(f"in_flight after no-replica {inf}")
        if probs:
            return "DEFECT: /v1/messages failures: " + "; ".join(probs)
        return "OK: /v1/messages failures in Anthropic shape: " + " | ".join(info) + f"; in_flight {inf}"
    finally:
        px.stop()
        try:
            await fake.stop()
        except Exception:
            pass


run(main)
