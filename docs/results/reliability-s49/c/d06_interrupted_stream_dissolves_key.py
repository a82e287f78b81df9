# ruff: noqa
"""A chat agent names its conversation by prompt_cache_key (one per conversation). It stops reading a streamed
answer part way (the user interrupts, or the agent stops once it has what it needs) and closes it, then sends
its next call at once, as agents do. Nothing of the conversation runs in parallel: the proxy has not yet
processed the hang-up when the next call arrives, so the key is taken as 'shared' and the conversation's
session dissolved. Counts, over 40 conversations (one at a time), how many keep their session id on the calls after the
interruption. Runs /tmp/snap49 and SAGA_TREE back to back."""

import sys

sys.path.insert(0, "/tmp/reviewC")
import h
from h import *

TARGET = h.TREE if h.TREE != "/tmp/snap49" else "/tmp/snap49b"  # (read before `one` sets h.TREE)

INTERRUPT_TURN = int(os.environ.get("INTERRUPT_TURN", 0))  # which call of the conversation is interrupted


async def conv(s, url, k):
    msgs = [
        {"role": "system", "content": "You are a coding agent. " + words(300, 7)},
        {"role": "user", "content": words(300, 100 + k)},
    ]
    key = f"thread-{k}"
    ids = []
    for t in range(6):
        body = {"model": "saga-sim", "messages": msgs, "max_tokens": 30, "prompt_cache_key": key}
        if t == INTERRUPT_TURN:  # interrupted stream
            resp = await s.post(
                url + "/v1/chat/completions", json=dict(body, stream=True, max_tokens=400, ignore_eos=True)
            )
            n = 0
            async for line in resp.content:
                n += 1
                if n > 6:
                    break
            resp.close()
            msgs = msgs + [{"role": "user", "content": "Stop. Do this instead: " + words(30, k)}]
            continue
        st, txt, dt, hd = await post(s, url, "/v1/chat/completions", body)
        if t > INTERRUPT_TURN:
            ids.append(hd.get("X-Session-ID"))
        msgs = msgs + [
            json.loads(txt)["choices"][0]["message"],
            {"role": "user", "content": words(60, 1000 * k + t)},
        ]
    return all(x == key for x in ids)


async def one(tree, base):
    sp, reps = sims(base, 2, scale=1.0, tree=tree)
    pp, url = proxy(base + 10, reps, tree=tree)
    async with aiohttp.ClientSession() as s:
        await wait_kv(s, url, 2)
        kept = 0
        for k in range(40):  # one conversation at a time: no concurrency between conversations either
            kept += await conv(s, url, k)
        st = await get(s, url, "/saga/v1/state")
    kill(pp)
    kill(sp)
    return kept, st.get("shared_cache_keys")


async def run():
    b = await one("/tmp/snap49", 24280)
    a = await one(TARGET, 24300)
    line = (
        f"conversations keeping their key's session after an interrupted stream: before(4cd78d9) {b[0]}/40; "
        f"now {a[0]}/40 (shared_cache_keys {a[1]})"
    )
    if a[0] < b[0]:
        return (
            "DEFECT: a sequential conversation that interrupts a stream and sends its next call at once loses its prompt_cache_key session: "
            + line
        )
    return "OK: " + line


main(run)
