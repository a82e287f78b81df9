# ruff: noqa
# S1: accounting after cancelled / refused / odd parallel calls of one session, then a probe that should not spill.
import asyncio, json, sys, time

sys.path.insert(0, "/tmp/rev51")
from h import *

TREE = sys.argv[1] if len(sys.argv) > 1 else "/tmp/snap51"


async def stream_cancel(s, url, msgs, hdr, max_tokens, after_chunks=2):
    body = {"model": "saga-sim", "messages": msgs, "max_tokens": max_tokens, "stream": True}
    try:
        async with s.post(
            url + "/v1/chat/completions", json=body, headers=hdr, timeout=aiohttp.ClientTimeout(total=60)
        ) as r:
            n = 0
            async for _ in r.content:
                n += 1
                if n >= after_chunks:
                    break
            rep = r.headers.get("X-Saga-Replica")
            r.close()
            return r.status, rep
    except Exception as e:
        return repr(e), None


async def probe(s, url, sid, n_par=2, mt=16):
    sys_msg = {"role": "system", "content": "probe " + words(40, hash(sid) % 1000)}
    st0 = await get(s, url, "/saga/v1/state")
    c, t, _, h = await chat(
        s,
        url,
        [sys_msg, {"role": "user", "content": "hi " + sid}],
        headers={"X-Session-ID": sid},
        max_tokens=mt,
    )
    bound = h.get("X-Saga-Replica")
    # one long call keeps the workflow in flight; then n_par small calls beside it
    long_t = asyncio.create_task(
        chat(
            s,
            url,
            [sys_msg, {"role": "user", "content": "long " + sid}],
            headers={"X-Session-ID": sid},
            max_tokens=300,
        )
    )
    await asyncio.sleep(0.3)
    rs = await asyncio.gather(
        *[
            chat(
                s,
                url,
                [sys_msg, {"role": "user", "content": f"par {i} " + sid}],
                headers={"X-Session-ID": sid},
                max_tokens=mt,
            )
            for i in range(n_par)
        ]
    )
    await long_t
    st1 = await get(s, url, "/saga/v1/state")
    reps = [r[3].get("X-Saga-Replica") == bound for r in rs]
    return st1["spills"] - st0["spills"], reps


async def main():
    sp, reps = start_sims(TREE, 24000, 2)
    pp, url = start_proxy(TREE, 24010, reps)
    out = {}
    try:
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, url, 2)
            out["probe_before"] = await probe(s, url, "probe-a")
            sid = "abuse"
            sysm = {"role": "system", "content": "abuse " + words(60, 3)}
            hdr = {"X-Session-ID": sid}
            await chat(s, url, [sysm, {"role": "user", "content": "first"}], headers=hdr, max_tokens=16)
            long_t = asyncio.create_task(
                chat(s, url, [sysm, {"role": "user", "content": "long one"}], headers=hdr, max_tokens=600)
            )
            await asyncio.sleep(0.3)
            tasks = []
            # cancelled mid-stream beside the long call
            tasks += [
                stream_cancel(
                    s, url, [sysm, {"role": "user", "content": f"c{i} " + words(100, i)}], hdr, 1500
                )
                for i in range(6)
            ]
            # refused: prompt past the context (tiny-cpu: 4224 KV)
            tasks += [
                chat(
                    s,
                    url,
                    [sysm, {"role": "user", "content": words(5000, 50 + i)}],
                    headers=hdr,
                    max_tokens=16,
                )
                for i in range(2)
            ]
            # refused by the replica: max_tokens past the context
            tasks += [
                chat(s, url, [sysm, {"role": "user", "content": f"big {i}"}], headers=hdr, max_tokens=100000)
                for i in range(2)
            ]

            # client timeout
            async def tmo(i):
                try:
                    return await chat(
                        s,
                        url,
                        [sysm, {"role": "user", "content": f"t{i} " + words(50, 90 + i)}],
                        headers=hdr,
                        max_tokens=1500,
                        timeout=0.5,
                    )
                except Exception as e:
                    return repr(e)[:40]

            tasks += [tmo(i) for i in range(4)]
            res = await asyncio.gather(*tasks)
            await long_t
            out["abuse_results"] = [r[0] if isinstance(r, tuple) else r for r in res]
            st = await quiesce_state(s, url, 4)
            out["after_abuse"] = summarize(st)
            out["probe_after"] = await probe(s, url, "probe-b")
            out["probe_after2"] = await probe(s, url, "probe-c")
            st = await quiesce_state(s, url, 2)
            out["end"] = summarize(st)
    finally:
        stop_all()
    pb, pa, pa2 = out["probe_before"][0], out["probe_after"][0], out["probe_after2"][0]
    stuck = out["end"]["in_flight"] or any(v[0] for v in out["end"]["reps"].values())
    verdict = "DEFECT" if (pa > pb or pa2 > pb or stuck) else "OK"
    print(
        f"{verdict}: tree={TREE} probe spills before={out['probe_before']} after={out['probe_after']} after2={out['probe_after2']} after_abuse={out['after_abuse']} end={out['end']} abuse_status={out['abuse_results']}"
    )


asyncio.run(main())
