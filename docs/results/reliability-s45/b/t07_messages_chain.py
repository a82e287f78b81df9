# ruff: noqa
"""/v1/messages conversation without session headers (streamed, with tools, system as blocks, as Claude Code
sends): prefix chaining must keep every turn in one session on one replica."""

import os
from pathlib import Path

import asyncio, json, sys, re

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *

TOOLS = [
    {
        "name": "Bash",
        "description": "run",
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
    }
]


def rebuild(stream_bytes):
    blocks = {}
    stop = None
    usage = None
    for ev in stream_bytes.split(b"\n\n"):
        if b"data: " not in ev:
            continue
        d = json.loads(ev.split(b"data: ", 1)[1])
        t = d["type"]
        if t == "content_block_start":
            blocks[d["index"]] = dict(d["content_block"])
            blocks[d["index"]]["_json"] = ""
        elif t == "content_block_delta":
            dd = d["delta"]
            if dd["type"] == "text_delta":
                blocks[d["index"]]["text"] += dd["text"]
            elif dd["type"] == "input_json_delta":
                blocks[d["index"]]["_json"] += dd["partial_json"]
        elif t == "message_delta":
            stop = d["delta"]["stop_reason"]
            usage = d.get("usage")
    out = []
    for i in sorted(blocks):
        b = blocks[i]
        j = b.pop("_json")
        if b["type"] == "tool_use":
            b["input"] = json.loads(j) if j else {}
        out.append(b)
    return out, stop, usage


async def main():
    px = Proxy(26007, [], ["--simulate", "4", "--time-scale", "50"])
    try:
        await px.wait_ready()
        msgs = [
            {"role": "user", "content": [{"type": "text", "text": "Fix the failing test in repo foo please"}]}
        ]
        system = [
            {"type": "text", "text": "You are Claude Code, an agent.", "cache_control": {"type": "ephemeral"}}
        ]
        reps, sids, stops, probs = [], [], [], []
        for turn in range(6):
            req = {
                "model": "saga-sim",
                "max_tokens": 30,
                "stream": True,
                "system": system,
                "messages": msgs,
                "tools": TOOLS,
            }
            st, h, b = await raw(
                26007,
                post(
                    "/v1/messages?beta=true",
                    json.dumps(req),
                    [("x-api-key", "sk-ant-x"), ("anthropic-version", "2023-06-01")],
                ),
                timeout=20,
            )
            if st != 200:
                probs.append(f"turn {turn}: {st} {b[:200]!r}")
                break
            reps.append(h.get("x-saga-replica"))
            sids.append(h.get("x-session-id"))
            content, stop, usage = rebuild(b)
            stops.append(stop)
            msgs.append({"role": "assistant", "content": content})
            tus = [c for c in content if c["type"] == "tool_use"]
            if tus:
                msgs.append(
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": t["id"], "content": "ok output"}
                            for t in tus
                        ],
                    }
                )
            else:
                msgs.append({"role": "user", "content": [{"type": "text", "text": f"now step {turn}"}]})
        if len(set(sids)) != 1:
            probs.append(f"sessions per turn {sids}")
        if len(set(reps)) != 1:
            probs.append(f"replicas per turn {[r[-5:] for r in reps]}")
        inf = await in_flight(26007)
        if inf[0]:
            probs.append(f"in_flight {inf}")
        if probs:
            return (
                f"DEFECT: /v1/messages chain w/o session header split: "
                + "; ".join(probs)
                + f" (stop reasons {stops})"
            )
        return f"OK: /v1/messages 6-turn streamed tool conversation kept in one session {sids[0]} on one replica; stops {stops}; in_flight {inf}"
    finally:
        px.stop()


run(main)
