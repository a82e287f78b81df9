# ruff: noqa
"""A chat agent names its conversation by prompt_cache_key (one per conversation). Its first call times out
on the client (0.3 s, a non-streamed answer still being generated); the client hangs up and retries the same
call at once, as OpenAI's SDK and agents do. Nothing runs in parallel on the client's side: if the proxy has
not yet processed the hang-up when the retry arrives, the key is taken as 'shared' and the conversation's
session dissolved. Counts, over 80 conversations (one at a time), how many keep their session id on the
calls after the retry. Runs /tmp/snap49 and SAGA_TREE back to back."""

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
        if t == INTERRUPT_TURN:  # the client times out
            await post(
                s, url, "/v1/chat/completions", dict(body, max_tokens=400, ignore_eos=True), timeout=0.3
            )
            pass  # the client retries the same call at once
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
        for k in range(80):  # one conversation at a time: no concurrency between conversations either
            kept += await conv(s, url, k)
        st = await get(s, url, "/saga/v1/state")
    kill(pp)
    kill(sp)
    return kept, st.get("shared_cache_keys")


async def run():
    b = await one("/tmp/snap49", 24320)
    a = await one(TARGET, 24340)
    line = (
        f"conversations keeping their key's session after a client timeout and an immediate retry: before(4cd78d9) {b[0]}/80; "
        f"now {a[0]}/80 (shared_cache_keys {a[1]})"
    )
    if a[0] < b[0]:
        return (
            "DEFECT: a conversation retrying a timed-out call at once can lose its prompt_cache_key session: "
            + line
        )
    return "OK: " + line


main(run)
