# ruff: noqa
"""Responses API used statelessly (store: false, the whole input list resent each turn, as Codex CLI / Agents SDK
without server state do), no session header: are the turns kept in one session on one replica?"""

import os
from pathlib import Path

import asyncio, json, sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *


async def main():
    px = Proxy(26024, [], ["--simulate", "4", "--time-scale", "50"])
    try:
        await px.wait_ready()
        inp = [
            {
                "role": "user",
                "content": [{"type": "input_text", "text": "Refactor module bar in repo please"}],
            }
        ]
        reps, sids = [], []
        for turn in range(5):
            req = {
                "model": "saga-sim",
                "instructions": "You are a coding agent.",
                "input": inp,
                "store": False,
                "max_output_tokens": 8,
            }
            st, h, b = await raw(26024, post("/v1/responses", json.dumps(req)), timeout=20)
            if st != 200:
                return f"DEFECT: turn {turn}: {st} {b[:200]!r}"
            reps.append(h.get("x-saga-replica"))
            sids.append(h.get("x-session-id"))
            d = json.loads(b)
            for item in d["output"]:
                item = {k: v for k, v in item.items() if k not in ("status",)}
                inp.append(item)
            inp.append({"role": "user", "content": [{"type": "input_text", "text": f"continue {turn}"}]})
        if len(set(sids)) > 1:
            return f"DEFECT: stateless Responses conversation split into sessions {sids} on {[r[-5:] for r in reps]}"
        return f"OK: stateless Responses conversation (store false, full input resent) kept in one session {sids[0]} on one replica ({len(set(reps))} distinct)"
    finally:
        px.stop()


run(main)
