# ruff: noqa
"""An agent names its session with the X-Session-ID header ('task-7') on every call; while one of its calls
runs, another call (a helper, a summarizer, any client of the same tenant) sends only
"prompt_cache_key": "task-7". Now the key is found 'shared' and the session the header names is dissolved:
forgotten once its call ends, so the agent's next call starts a new workflow (admission, reservation and
predictor state from scratch). Before (4cd78d9) the session went on. Runs /tmp/snap49 and SAGA_TREE."""

import sys

sys.path.insert(0, "/tmp/reviewC")
import h
from h import *

TARGET = h.TREE if h.TREE != "/tmp/snap49" else "/tmp/snap49b"  # (read before `one` sets h.TREE)


async def one(tree, base):
    sp, reps = sims(base, 2, scale=1.0, tree=tree)
    pp, url = proxy(base + 10, reps, tree=tree)
    async with aiohttp.ClientSession() as s:
        await wait_kv(s, url, 2)
        msgs = [
            {"role": "system", "content": "sys " + words(300, 1)},
            {"role": "user", "content": words(200, 2)},
        ]
        H = {"X-Session-ID": "task-7"}
        admitted0 = (await get(s, url, "/saga/v1/state"))["admission"]["admitted"]
        for t in range(6):
            b = {"model": "saga-sim", "messages": msgs, "max_tokens": 40, "ignore_eos": True}
            if t == 2:
                side = {
                    "model": "saga-sim",
                    "messages": [{"role": "user", "content": "summarize " + words(50, 9)}],
                    "max_tokens": 5,
                    "prompt_cache_key": "task-7",
                }
                main_t = asyncio.create_task(post(s, url, "/v1/chat/completions", b, headers=H))
                await asyncio.sleep(0.02)
                await post(s, url, "/v1/chat/completions", side)
                r = await main_t
            else:
                r = await post(s, url, "/v1/chat/completions", b, headers=H)
            msgs = msgs + [
                json.loads(r[1])["choices"][0]["message"],
                {"role": "user", "content": words(50, t + 10)},
            ]
        sess = await get(s, url, "/saga/v1/sessions")
        calls = {x["session_id"]: x["calls"] for x in sess["sessions"]}.get("task-7")
        st = await get(s, url, "/saga/v1/state")
    kill(pp)
    kill(sp)
    return calls, st["admission"]["admitted"] - admitted0


async def run():
    b = await one("/tmp/snap49", 24240)
    a = await one(TARGET, 24260)
    line = (
        f"session 'task-7' (6 header-named calls) holds calls={b[0]}, workflows admitted {b[1]} before(4cd78d9); "
        f"now calls={a[0]}, workflows admitted {a[1]}"
    )
    if a[0] is not None and b[0] is not None and a[0] < b[0] - 2:
        return (
            "DEFECT: a prompt_cache_key equal to a header-named session's id dissolves that session mid-task: "
            + line
        )
    return "OK: " + line


main(run)
