# ruff: noqa
"""/v1/completions prompt forms (string, list of strings, token ids, list of token-id lists, edge values) and
/tokenize, /detokenize: through the proxy the status and (for deterministic routes) bytes must equal the replica's."""

import os
from pathlib import Path

import asyncio, json, sys, subprocess, time

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import *

PROMPTS = [
    "hello world",
    ["hello", "world"],
    [1, 2, 3, 4],
    [[1, 2, 3], [4, 5]],
    "",
    [],
    [""],
    [[]],
    "a\u0000b",
    "\u00e9\ud83d\ude00",
    5,
    None,
    [1, "a"],
    {"a": 1},
]


async def main():
    sim = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "sim", "--base-port", "26208", "--time-scale", "50"],
        cwd=SNAP,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    px = Proxy(26008, ["http://127.0.0.1:26208"])
    try:
        await asyncio.sleep(2)
        await px.wait_ready()
        probs = []
        seen = []
        for p in PROMPTS:
            for stream in (False, True):
                req = {"model": "saga-sim", "prompt": p, "max_tokens": 4, "temperature": 0, "stream": stream}
                if p is None:
                    del req["prompt"]
                body = json.dumps(req)
                a = await raw(26208, post("/v1/completions", body), timeout=20)
                b = await raw(26008, post("/v1/completions", body), timeout=20)
                seen.append(f"{json.dumps(p)[:12]}{'/s' if stream else ''}:{a[0]}/{b[0]}")
                if a[0] != b[0]:
                    probs.append(
                        f"prompt {json.dumps(p)} stream={stream}: replica {a[0]} proxy {b[0]} {b[2][:150]!r}"
                    )
                if b[0] == 200 and stream and b"data: [DONE]" not in b[2]:
                    probs.append(f"prompt {json.dumps(p)} stream lacks [DONE]")
                if b[0] == 200 and stream and b'"usage"' in b[2]:
                    probs.append(f"prompt {json.dumps(p)}: usage event leaked into a stream that did not ask")
        for path, req in (
            ("/tokenize", {"model": "saga-sim", "prompt": "hello there \u00e9"}),
            ("/tokenize", {"model": "saga-sim", "messages": [{"role": "user", "content": "hi"}]}),
            ("/detokenize", {"model": "saga-sim", "tokens": [1, 2, 3]}),
            ("/tokenize", {"prompt": 5}),
            ("/detokenize", {"tokens": "x"}),
        ):
            a = await raw(26208, post(path, json.dumps(req)))
            b = await raw(26008, post(path, json.dumps(req)))
            if a[0] != b[0] or a[2] != b[2]:
                probs.append(f"{path} {req}: replica {a[0]} {a[2][:80]!r} proxy {b[0]} {b[2][:80]!r}")
        inf = await in_flight(26008)
        if inf[0]:
            probs.append(f"in_flight {inf}")
        if probs:
            return "DEFECT: completions/tokenize through proxy differ from replica: " + " | ".join(probs)
        return (
            "OK: completions prompt forms same status via proxy as direct ("
            + ", ".join(seen)
            + "); tokenize/detokenize byte-identical"
        )
    finally:
        px.stop()
        sim.kill()
        sim.wait()


run(main)
