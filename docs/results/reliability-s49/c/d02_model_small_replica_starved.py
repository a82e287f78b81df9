# ruff: noqa
"""Mixed fleet of two models: a big replica serving model 'big' (llama3-8b-h100 KV) and a small one
(tiny-cpu, --num-gpu-blocks-override 20: 2,560 tokens of KV, max-model-len 2048) that alone serves model
'small'. A client sends model 'small' ~1,000-1,900-token prompts (and last one of
~2,800 tokens, past its context: a 400 at once before) (it fits the small replica's KV; with the predictor's growth prior the workflow's footprint does not).
Before (4cd78d9) the empty small replica took it; now the big replica of the other model 'has room under its
limit', so the small one is left out, and routing (model filter) finds no candidate: the call waits.
Runs /tmp/snap49 and SAGA_TREE back to back."""

import sys

sys.path.insert(0, "/tmp/reviewC")
import h
from h import *

TARGET = h.TREE if h.TREE != "/tmp/snap49" else "/tmp/snap49b"  # (read before `one` sets h.TREE)

W = int(os.environ.get("WORKERS", 1))  # WORKERS=2: saga serve --workers 2


async def one(tree, base):
    h.TREE = tree
    big, rb = sims(base, 1, profile="llama3-8b-h100", model="big", tree=tree)
    small, rs = sims(base + 1, 1, profile="tiny-cpu", blocks=20, model="small", tree=tree)
    pp, url = proxy(base + 10, rb + rs, tree=tree, extra=["--workers", str(W)] if W > 1 else [])
    res = []
    async with aiohttp.ClientSession() as s:
        await wait_kv(s, url, 2)
        for i, n in enumerate((900, 1600, 1800, 2700)):
            msgs = [
                {"role": "system", "content": f"agent {i} " + words(50, i)},
                {"role": "user", "content": words(n, 100 + i)},
            ]
            st, txt, dt, hd = await post(
                s,
                url,
                "/v1/chat/completions",
                {"model": "small", "messages": msgs, "max_tokens": 10},
                timeout=20,
            )
            u = json.loads(txt).get("usage", {}).get("prompt_tokens") if st == 200 else None
            res.append((st, round(dt, 2), u))
        state = await get(s, url, "/saga/v1/state")
    kill(pp)
    kill(small)
    kill(big)
    return res, state["admission"]["waiting"]


async def run():
    b = await one("/tmp/snap49", 24400)
    a = await one(TARGET, 24420)
    line = f"workers {W}: before(4cd78d9): calls (status, s, engine prompt tokens) {b[0]} | now: {a[0]}, still waiting {a[1]}"
    if any(r[0] != 200 for r in a[0][:3]) and all(r[0] == 200 for r in b[0][:3]):
        return (
            "DEFECT: a model served only by a small replica: a call whose workflow footprint exceeds its KV waits while the other model's big replica has room: "
            + line
        )
    return "OK: " + line


main(run)
