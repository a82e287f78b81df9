# ruff: noqa
"""After failed calls on the non-chat routes (replica cut mid-stream, client gone mid-stream, whole answer cut,
upstream 500, proxy refusal), each named session shows in_flight 0, the proxy queue is empty and
X-Session-End ends the session."""

import os
from pathlib import Path

import asyncio, json, sys, time

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *
from midstream import MSG_EV, RESP_EV, CMP_EV


def handler(m, p, h, b):
    r = basic_routes(m, p, h, b)
    if r:
        return r
    mode = h.get("x-mode", "")
    if mode == "cut":
        return stream(MSG_EV, cut_after=2)
    if mode == "slow":
        return stream(RESP_EV * 10, delay=0.2)
    if mode == "wholecut":
        return [
            ("head", 200, [("content-type", "application/json"), ("content-length", "500")], False),
            ("data", b'{"id":'),
            ("cut",),
        ]
    if mode == "500":
        return whole(
            500, b'{"error":{"message":"boom","type":"InternalServerError","param":null,"code":500}}'
        )
    return whole(
        200,
        b'{"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":"x","finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}',
    )


async def main():
    fake = Fake(26223, handler)
    await fake.start()
    px = Proxy(26021, ["http://127.0.0.1:26223"], ["--max-retries", "0"])
    try:
        await px.wait_ready()
        probs = []
        M = {"model": "fake", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "x"}]}
        await raw(26021, post("/v1/messages", json.dumps(M), [("X-Session-ID", "L1"), ("x-mode", "cut")]))
        r, w = await asyncio.open_connection("127.0.0.1", 26021)
        w.write(
            post(
                "/v1/responses",
                json.dumps({"model": "fake", "input": "x", "stream": True}),
                [("X-Session-ID", "L2"), ("x-mode", "slow")],
            )
        )
        await w.drain()
        await r.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.5)
        w.transport.abort()
        await raw(
            26021,
            post(
                "/v1/completions",
                json.dumps({"model": "fake", "prompt": "x"}),
                [("X-Session-ID", "L3"), ("x-mode", "wholecut")],
            ),
        )
        await raw(
            26021,
            post(
                "/v1/completions",
                json.dumps({"model": "fake", "prompt": "x"}),
                [("X-Session-ID", "L4"), ("x-mode", "500")],
            ),
        )
        await raw(26021, post("/v1/messages", b'{"x":', [("X-Session-ID", "L5")]))
        await asyncio.sleep(1.0)
        sess = json.loads(await aget(26021, "/saga/v1/sessions"))["sessions"]
        busy = [(s["session_id"], s["in_flight"]) for s in sess if s["in_flight"]]
        if busy:
            probs.append(f"sessions still in flight: {busy}")
        q = await aget(26021, "/saga/v1/queue")
        st = json.loads(await aget(26021, "/saga/v1/state"))
        if st["in_flight"] or st["queued"] or any(r["in_flight"] for r in st["replicas"]):
            probs.append(f"state {st['in_flight']} {st['queued']}")
        # end: the sessions with X-Session-End on a good call
        for sid in ("L1", "L2", "L3", "L4"):
            await raw(
                26021,
                post(
                    "/v1/completions",
                    json.dumps({"model": "fake", "prompt": "x"}),
                    [("X-Session-ID", sid), ("X-Session-End", "true")],
                ),
            )
        await asyncio.sleep(0.5)
        left = [
            s["session_id"]
            for s in json.loads(await aget(26021, "/saga/v1/sessions"))["sessions"]
            if s["session_id"] in ("L1", "L2", "L3", "L4")
        ]
        if left:
            probs.append(f"sessions not ended by X-Session-End: {left}")
        st2 = json.loads(await aget(26021, "/saga/v1/state"))
        res = st2["admission"]["reserved_tokens"]
        if any(v for v in (res.values() if isinstance(res, dict) else [])):
            probs.append(f"reserved tokens left after all sessions ended: {res}")
        if probs:
            return (
                "DEFECT: leaks after failed calls: "
                + "; ".join(probs)
                + f" (sessions {[(s['session_id'], s['in_flight'], s['calls']) for s in sess]})"
            )
        return f"OK: after cut/disconnect/wholecut/500/refusal: sessions {[(s['session_id'], s['in_flight'], s['calls']) for s in sess]} all in_flight 0, state in_flight 0, ended by X-Session-End, reserved {res}, admission {st2['admission']['live']} live"
    finally:
        px.stop()
        await fake.stop()


run(main)
