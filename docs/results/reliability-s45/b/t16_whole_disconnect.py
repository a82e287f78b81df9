# ruff: noqa
"""Client hangs up while a whole (non-streamed) answer is generating on /v1/messages, /v1/responses,
/v1/completions: the replica's connection must be closed soon (vLLM aborts the request), in_flight back to 0."""

import os
from pathlib import Path

import asyncio, json, sys, time

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *


def handler(m, p, h, b):
    r = basic_routes(m, p, h, b)
    if r:
        return r
    return [("sleep", 0.2)] * 30 + whole(200, b'{"id":"x","usage":{"input_tokens":1,"output_tokens":1}}')


async def main():
    fake = Fake(26218, handler)
    await fake.start()
    px = Proxy(26016, ["http://127.0.0.1:26218"])
    try:
        await px.wait_ready()
        probs = []
        res = []
        for path, req in (
            (
                "/v1/messages",
                {"model": "fake", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            ),
            ("/v1/responses", {"model": "fake", "input": "x"}),
            ("/v1/completions", {"model": "fake", "prompt": "x"}),
        ):
            n = len(fake.closed_conns)
            r, w = await asyncio.open_connection("127.0.0.1", 26016)
            w.write(post(path, json.dumps(req)))
            await w.drain()
            await asyncio.sleep(0.6)
            t0 = time.time()
            w.transport.abort()
            t_up = None
            for _ in range(40):
                await asyncio.sleep(0.1)
                cl = [c for c in fake.closed_conns[n:] if c[1] == path]
                if cl:
                    t_up = cl[0][0] - t0
                    break
            res.append(f"{path}: upstream closed after {t_up if t_up is None else round(t_up, 2)}s")
            if t_up is None:
                probs.append(f"{path}: upstream still open 4s after client left")
        await asyncio.sleep(0.5)
        inf = await in_flight(26016)
        if inf[0] or any(inf[1]):
            probs.append(f"in_flight {inf}")
        if probs:
            return "DEFECT: whole-answer client disconnect: " + "; ".join(probs)
        return "OK: whole-answer client disconnect aborts upstream: " + "; ".join(res) + f"; in_flight {inf}"
    finally:
        px.stop()
        await fake.stop()


run(main)
