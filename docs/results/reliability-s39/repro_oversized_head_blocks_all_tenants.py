"""One tenant's new workflow whose footprint cannot fit beside the current reservations (here a prompt longer
than the replicas' whole context, which vLLM refuses at once with a 400) heads the admission queue and blocks
every other tenant's new workflows behind it, although they fit and the replicas are idle: all wait until a
replica has nothing reserved at all (holds run out after up to max_hold_s = 120 s) or max_wait_s (300 s).
Prints DEFECT while present."""

import asyncio

import aiohttp
import lib

SIM, PORT = 19251, 19250
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}", f"http://127.0.0.1:{SIM + 1}"]


async def main():
    async with aiohttp.ClientSession() as s:
        # tenant B's agents: one short workflow per replica, admitted, now waiting on a tool call (held)
        for i in range(2):
            st, *_ = await lib.chat(
                s, B, lib.prompt(200, "ab"[i]), sid=f"b-agent{i}", headers={"X-Tenant-ID": "B"}
            )
            assert st == 200
        print("reserved:", lib.summary(B)["reserved"])
        # tenant A: a prompt of ~6,000 tokens; each replica holds 3,200 (max_model_len 3,184)
        big = asyncio.create_task(
            lib.chat(s, B, lib.prompt(6000, "h"), sid="a-huge", headers={"X-Tenant-ID": "A"}, timeout=20)
        )
        await asyncio.sleep(1)
        # tenant B starts 3 more small workflows (~210 tokens each; the replicas have ~3,900 tokens of room)
        small = await asyncio.gather(
            *(
                lib.chat(
                    s, B, lib.prompt(200, "cde"[i]), sid=f"b-new{i}", headers={"X-Tenant-ID": "B"}, timeout=15
                )
                for i in range(3)
            )
        )
        print("tenant B's new small workflows:", [(r[0], round(r[1], 1)) for r in small])
        st, dt, text, _ = await big
        print("tenant A's oversized call:", st, f"{dt:.1f}s", text[:120])
        print("state:", lib.summary(B))
        return small


if __name__ == "__main__":
    sims = lib.start_sims(SIM, 2, 200)
    proxy = lib.start_proxy(PORT, R)
    try:
        small = asyncio.run(main())
        blocked = sum(1 for r in small if r[0] != 200)
        print(
            f"DEFECT: {blocked} of 3 small workflows of another tenant were held behind the oversized one"
            if blocked
            else "ok"
        )
    finally:
        lib.stop(proxy)
        lib.stop(sims)
