# ruff: noqa
"""A Responses API stream whose events arrive in small TCP pieces (the id cut across reads, as a slow network or
proxy in between may deliver): the continuation by previous_response_id must still reach the storing replica."""

import os
from pathlib import Path

import asyncio, json, sys, itertools

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *


def make(tag):
    own = set()
    ctr = itertools.count()

    def handler(m, p, h, b):
        r = basic_routes(m, p, h, b)
        if r:
            return r
        req = json.loads(b) if b else {}
        prev = req.get("previous_response_id")
        if prev and prev not in own:
            return whole(
                404,
                b'{"error":{"message":"Response with id not found.","type":"NotFoundError","param":"response_id","code":404}}',
            )
        rid = f"resp_{tag}{next(ctr):06d}"
        own.add(rid)
        R = (
            b'{"id":"%s","created_at":1,"model":"fake","object":"response","output":[],"status":"in_progress","usage":null}'
            % rid.encode()
        )
        evs = b"".join(
            [
                b'event: response.created\ndata: {"response":%s,"sequence_number":0,"type":"response.created"}\n\n'
                % R,
                b'event: response.output_text.delta\ndata: {"content_index":0,"delta":"Hi","item_id":"msg_1","output_index":0,"sequence_number":1,"type":"response.output_text.delta","logprobs":[]}\n\n',
                b'event: response.completed\ndata: {"response":{"id":"%s","created_at":1,"model":"fake","object":"response","output":[{"id":"msg_1","content":[{"annotations":[],"text":"Hi","type":"output_text"}],"role":"assistant","status":"completed","type":"message"}],"status":"completed","usage":{"input_tokens":11,"output_tokens":1,"total_tokens":12}},"sequence_number":2,"type":"response.completed"}\n\n'
                % rid.encode(),
            ]
        )
        pieces = [evs[i : i + 9] for i in range(0, len(evs), 9)]
        return stream(pieces, delay=0.002)

    return handler


async def main():
    fa = Fake(26214, make("a"))
    fb = Fake(26215, make("b"))
    await fa.start()
    await fb.start()
    px = Proxy(26013, ["http://127.0.0.1:26214", "http://127.0.0.1:26215"], ["--policy", "round-robin"])
    try:
        await px.wait_ready()
        probs = []
        prev = None
        res = []
        for turn in range(6):
            req = {"model": "fake", "input": f"t{turn}", "stream": True}
            if prev:
                req["previous_response_id"] = prev
            st, h, b = await raw(26013, post("/v1/responses", json.dumps(req)), timeout=20)
            res.append(st)
            if st != 200:
                probs.append(f"turn {turn} continuing {prev}: {st} {b[:100]!r}")
                break
            prev = json.loads(b.split(b"\n\n")[-2].split(b"data: ", 1)[1])["response"]["id"]
        inf = await in_flight(26013)
        if inf[0] or any(inf[1]):
            probs.append(f"in_flight {inf}")
        if probs:
            return "DEFECT: response id split across reads: " + "; ".join(probs) + f" statuses {res}"
        return f"OK: streamed response ids split into 9-byte reads still pin continuations (statuses {res}, last {prev}), in_flight {inf}"
    finally:
        px.stop()
        await fa.stop()
        await fb.stop()


run(main)
