# ruff: noqa
# S7: sequential agents (one call at a time) and a client that times out then resends the same call at once:
# replica per call and spills, snap51 vs snap55, same sims.
import asyncio, json, sys

sys.path.insert(0, "/tmp/rev51")
from h import *

P = int(sys.argv[1]) if len(sys.argv) > 1 else 24600


async def agent(s, url, aid, tag, ncalls=5):
    sysm = {"role": "system", "content": f"Seq agent. " + words(3000, 77)}
    msgs = [sysm, {"role": "user", "content": f"task {tag}-{aid} " + words(40, aid)}]
    hdr = {"X-Session-ID": f"{tag}-seq-{aid}"}
    seq = []
    for i in range(ncalls):
        st, txt, dt, h = await chat(s, url, msgs, headers=hdr, max_tokens=64)
        seq.append(h.get("X-Saga-Replica", "")[-1])
        ans = json.loads(txt)["choices"][0]["message"].get("content") or "" if st == 200 else ""
        msgs = msgs + [
            {"role": "assistant", "content": ans},
            {"role": "user", "content": f"tool out {i} " + words(300, 100 * aid + i)},
        ]
    return "".join(seq)


async def run(tree, sims, port, tag):
    pp, url = start_proxy(tree, port, sims)
    try:
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, url, 2)
            seqs = await asyncio.gather(*[agent(s, url, a, tag) for a in range(4)])
            st0 = await get(s, url, "/saga/v1/state")
            # timeout + resend
            sysm = {"role": "system", "content": "Retry agent. " + words(3000, 78)}
            msgs = [sysm, {"role": "user", "content": "do it " + tag}]
            hdr = {"X-Session-ID": f"{tag}-retry"}
            st, txt, dt, h = await chat(s, url, msgs, headers=hdr, max_tokens=16)
            b0 = h.get("X-Saga-Replica", "")[-1]
            msgs2 = msgs + [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "long job"}]
            try:
                await chat(
                    s, url, msgs2, headers=hdr, max_tokens=3000, timeout=1.0, extra={"ignore_eos": True}
                )
                tmo = "no-timeout"
            except Exception as e:
                tmo = type(e).__name__
            st, txt, dt, h = await chat(
                s, url, msgs2, headers=hdr, max_tokens=3000, timeout=120, extra={"ignore_eos": True}
            )
            r1 = h.get("X-Saga-Replica", "")[-1]
            st1 = await get(s, url, "/saga/v1/state")
            await asyncio.sleep(2)
            st2 = await get(s, url, "/saga/v1/state")
    finally:
        stop(pp)
    return seqs, st0.get("spills"), (b0, tmo, r1, st, round(dt, 2)), st1.get("spills"), summarize(st2)


async def main():
    sp, sims = start_sims("/tmp/snap51", P, 2, profile="llama3-8b-h100", blocks=3000)
    try:
        a = await run("/tmp/snap51", sims, P + 10, "a")
        b = await run("/tmp/snap55", sims, P + 11, "b")
    finally:
        stop_all()
    bad = (a[1] or 0) > 0 or (a[3] or 0) > 0 or a[2][0] != a[2][2]
    print(
        ("DEFECT" if bad else "OK")
        + f": s51 seqs={a[0]} spills_seq={a[1]} retry(bound,first,resent_on,status,s)={a[2]} spills_after_retry={a[3]} end={a[4]} || s55 seqs={b[0]} retry={b[2]} end={b[4]}"
    )


asyncio.run(main())
