"""The predictor learns a call's prompt growth as (the proxy's byte estimate of this call's prompt: body bytes
/ 4) minus (the engine's prompt_tokens of the previous call). Whenever the replica's tokenizer does not count
exactly 4 bytes of JSON per token, the whole context's estimation error is learned as growth, on every call:
here 14 tokens of true growth per call are learned as ~1,300. Admission sizes each workflow's reservation
from it (context + predicted growth), so workflows reserve about twice their KV and new workflows wait in
the proxy on a replica with KV to spare. Prints DEFECT while the learned growth is far from the engine's."""

import asyncio

from common import aiohttp, lib, run_with_proxy

SIM, PORT = 19491, 19490
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]
WORDS = 1500
usage_growth = []
peak = {"waiting": 0, "kv_usage_when_waiting": None, "reserved": 0}


async def sess(s, i, calls=6, gap=0.05):
    msgs = [{"role": "system", "content": lib.prompt(WORDS, f"s{i}_")}, {"role": "user", "content": "start"}]
    last = None
    for k in range(calls):
        h = {"X-Session-ID": f"g{i}", "X-Agent-Type": "grower"}
        if k == calls - 1:
            h["X-Session-End"] = "true"
        body = {"model": "saga-sim", "messages": msgs, "max_tokens": 4}
        async with s.post(f"{B}/v1/chat/completions", json=body, headers=h) as r:
            j = await r.json()
        p = j["usage"]["prompt_tokens"]
        if last is not None:
            usage_growth.append(p - last)
        last = p + j["usage"]["completion_tokens"]
        msgs += [
            {"role": "assistant", "content": j["choices"][0]["message"]["content"]},
            {"role": "user", "content": f"next {k}"},
        ]
        await asyncio.sleep(gap)
    return last


async def watch(stop):
    while not stop.is_set():
        st = lib.state(B)
        w = st["admission"]["waiting"]
        rep = st["replicas"][0]
        if w > peak["waiting"]:
            peak["waiting"], peak["kv_usage_when_waiting"] = w, round(rep["kv_usage"], 2)
        peak["reserved"] = max(peak["reserved"], rep["reserved_tokens"])
        await asyncio.sleep(0.05)


async def main():
    async with aiohttp.ClientSession() as s:
        for batch in range(2):  # teach the agent type (20 tasks of 6 calls)
            await asyncio.gather(*(sess(s, f"{batch}{i}") for i in range(10)))
        g = lib.get(f"{B}/saga/v1/graphs")[1]
        gr = next(x for x in g["graphs"] if x["agent_type"] == "grower")
        learned = max(
            e["growth_tokens"]["mean"] for n in gr["nodes"] if n["key"] != "start" for e in n["edges"]
        )
        true = sum(usage_growth) / len(usage_growth)
        # one workflow alone: what admission reserves for it between two calls, against its next prompt
        msgs = [{"role": "system", "content": lib.prompt(WORDS, "s99")}, {"role": "user", "content": "start"}]
        body = {"model": "saga-sim", "messages": msgs, "max_tokens": 4}
        h = {"X-Session-ID": "alone", "X-Agent-Type": "grower"}
        async with s.post(f"{B}/v1/chat/completions", json=body, headers=h) as r:
            j = await r.json()
        await asyncio.sleep(0.1)
        held = lib.state(B)["replicas"][0]["reserved_tokens"]
        msgs += [
            {"role": "assistant", "content": j["choices"][0]["message"]["content"]},
            {"role": "user", "content": "next"},
        ]
        body["messages"] = msgs
        h["X-Session-End"] = "true"
        async with s.post(f"{B}/v1/chat/completions", json=body, headers=h) as r:
            nxt = (await r.json())["usage"]["prompt_tokens"]
        print(
            f"a workflow alone: {held} tokens reserved between its calls; "
            f"its next call's prompt: {nxt} tokens"
        )
        # 8 tasks at once on a replica of 16,000 tokens (admission's limit 24,000): ~2,000-token contexts
        stop = asyncio.Event()
        w = asyncio.create_task(watch(stop))
        ctx = await asyncio.gather(*(sess(s, f"9{i}", gap=0.5) for i in range(8)))
        stop.set()
        await w
    print(f"growth per call: engine's usage {true:.0f} tokens, learned by the predictor {learned:.0f}")
    print(
        f"8 tasks of ~{max(ctx)} tokens each ({8 * max(ctx)} in all, KV 16,000): peak reserved "
        f"{peak['reserved']} tokens; up to {peak['waiting']} new workflows waited in admission while the "
        f"replica's KV usage was {peak['kv_usage_when_waiting']}"
    )
    if learned > 10 * max(true, 1):
        print(
            f"DEFECT: the predictor learned {learned:.0f} tokens of growth per call "
            f"where the engine saw {true:.0f}"
        )
    else:
        print("ok")


run_with_proxy(main, SIM, 1, 1000, PORT)
