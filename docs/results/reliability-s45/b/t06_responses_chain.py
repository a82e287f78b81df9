# ruff: noqa
"""Responses API chain by previous_response_id (streamed and whole, no session named) on 4 replicas: every turn
on the storing replica, one session, GET /v1/responses/{id} and /cancel reach the storing replica."""

import os
from pathlib import Path

import asyncio, json, sys, re

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *


async def main():
    px = Proxy(26006, [], ["--simulate", "4", "--time-scale", "50"])
    try:
        await px.wait_ready()
        prev = None
        reps = []
        ids = []
        probs = []
        for turn in range(8):
            req = {
                "model": "saga-sim",
                "input": f"turn {turn} please go on",
                "max_output_tokens": 6,
                "stream": turn % 2 == 1,
            }
            if prev:
                req["previous_response_id"] = prev
            st, h, b = await raw(26006, post("/v1/responses", json.dumps(req)), timeout=20)
            if st != 200:
                probs.append(f"turn {turn}: {st} {b[:200]!r}")
                break
            reps.append(h.get("x-saga-replica"))
            sid = h.get("x-session-id")
            if req["stream"]:
                evs = [e for e in b.split(b"\n\n") if e]
                types = [re.search(rb"event: (\S+)", e).group(1).decode() for e in evs]
                if types[0] != "response.created" or types[-1] != "response.completed":
                    probs.append(f"turn {turn} event order {types}")
                last = json.loads(evs[-1].split(b"data: ", 1)[1])
                prev = last["response"]["id"]
                if not last["response"].get("usage"):
                    probs.append("no usage in response.completed")
            else:
                prev = json.loads(b)["id"]
            ids.append((prev, sid))
        sids = {s for _, s in ids}
        if len(set(reps)) != 1:
            probs.append(f"turns on different replicas {reps}")
        if len(sids) != 1:
            probs.append(f"turns in different sessions {sids}")
        for rid, _ in ids:
            st, h, b = await raw(26006, f"GET /v1/responses/{rid} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            if st != 200:
                probs.append(f"GET {rid}: {st} {b[:120]!r}")
        st, h, b = await raw(26006, post(f"/v1/responses/{ids[0][0]}/cancel", b""))
        if st == 404:
            probs.append(f"cancel reached a replica without it: {b[:150]!r}")
        sess = json.loads(await aget(26006, "/saga/v1/sessions"))["sessions"]
        calls = {s["session_id"]: s["calls"] for s in sess}
        if list(sids)[0] not in calls or calls[list(sids)[0]] != 8:
            probs.append(f"session calls {calls}")
        inf = await in_flight(26006)
        if inf[0]:
            probs.append(f"in_flight {inf}")
        if probs:
            return "DEFECT: responses chain: " + "; ".join(probs)
        return f"OK: 8-turn previous_response_id chain (stream/whole alternating) all on {reps[0]}, one session {sids} with {calls}, GETs 200, cancel {st}, in_flight {inf}"
    finally:
        px.stop()


run(main)
