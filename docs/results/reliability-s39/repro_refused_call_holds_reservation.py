"""A call the replica refuses (vLLM's 400: prompt past the model's context) in a workflow that was served
before re-arms the workflow's KV reservation, sized by the refused prompt, for the whole hold (max_hold_s,
120 s, for a predictor that does not know it yet). On a small fleet that one refused call keeps every new
workflow waiting in admission while the replicas are idle. (The same happens when a replica restarts with a
smaller KV: every bound workflow's next call is refused and reserves past the new capacity.) Prints DEFECT
while present."""

import asyncio

import aiohttp
import lib

SIM, PORT = 19321, 19320
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]


async def main():
    async with aiohttp.ClientSession() as s:
        st, *_ = await lib.chat(s, B, lib.prompt(50, "a"), sid="agent")
        print("agent's first call:", st, "| reserved:", lib.summary(B)["reserved"])
        st, dt, text, _ = await lib.chat(s, B, lib.prompt(6000, "b"), sid="agent")  # past max_model_len
        print("agent's second call:", st, text[:90])
        await asyncio.sleep(1.5)
        print("reserved after the refusal:", lib.summary(B)["reserved"])
        st, dt, *_ = await lib.chat(s, B, lib.prompt(50, "c"), sid="newcomer", timeout=15)
        print("a new 60-token workflow on the idle replica:", st, f"{dt:.1f}s")
        return st


if __name__ == "__main__":
    sims = lib.start_sims(SIM, 1, 200)
    proxy = lib.start_proxy(PORT, R)
    try:
        st = asyncio.run(main())
        print("DEFECT: a refused call's reservation keeps new workflows waiting" if st == "timeout" else "ok")
    finally:
        lib.stop(proxy)
        lib.stop(sims)
