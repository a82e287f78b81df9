"""A session's parallel calls (a subagent fan-out sent in the parent's session) that arrive while the
session's first call still waits in admission each wait as a new workflow. When the first is admitted,
its siblings are not admitted with it: they stay in the fair queue behind whatever heads it, here
another tenant's workflow that does not fit, so calls of an admitted workflow wait (up to max_hold_s /
max_wait_s) although "calls of admitted workflows never wait for admission". Prints DEFECT while
present."""

import asyncio
import time

import aiohttp
import lib

SIM, PORT = 19301, 19300
B = f"http://127.0.0.1:{PORT}"
R = [f"http://127.0.0.1:{SIM}"]


async def main():
    async with aiohttp.ClientSession() as s:
        st, *_ = await lib.chat(s, B, lib.prompt(1500, "a"), sid="filler", headers={"X-Tenant-ID": "C"})
        assert st == 200
        # tenant A's agent fans out 3 parallel calls in its session; no room yet: they wait
        fan = [
            asyncio.create_task(
                lib.chat(
                    s,
                    B,
                    lib.prompt(1500, "b") + f" part {i}",
                    sid="S",
                    headers={"X-Tenant-ID": "A"},
                    timeout=20,
                )
            )
            for i in range(3)
        ]
        await asyncio.sleep(0.5)
        # tenant B's workflow that does not fit beside anything (a 6,000-token prompt; 3,200 tokens of KV)
        big = asyncio.create_task(
            lib.chat(s, B, lib.prompt(6000, "h"), sid="Bbig", headers={"X-Tenant-ID": "B"}, timeout=20)
        )
        await asyncio.sleep(0.5)
        print("waiting:", lib.summary(B)["waiting"])
        time.time()
        print("end filler:", lib.post(f"{B}/saga/v1/sessions/filler/end")[0])  # room for S now
        await asyncio.sleep(2)
        st = lib.state(B)
        print(
            "2 s after the room: waiting", st["admission"]["waiting"], "| S admitted:", lib.summary(B)["live"]
        )
        res = await asyncio.gather(*fan)
        print("S's fan-out calls:", [(r[0], round(r[1], 1)) for r in res])
        await big
        return res


if __name__ == "__main__":
    sims = lib.start_sims(SIM, 1, 200)
    proxy = lib.start_proxy(PORT, R)
    try:
        res = asyncio.run(main())
        ok = [r for r in res if r[0] == 200]
        print(
            f"DEFECT: {len(res) - len(ok)} of the admitted session's 3 parallel calls stayed in admission"
            if 0 < len(ok) < 3
            else ("ok" if len(ok) == 3 else "inconclusive (none admitted)")
        )
    finally:
        lib.stop(proxy)
        lib.stop(sims)
