# ruff: noqa
# S2: spilled calls (streams) running on replica B when B's process is killed; B restarted on the same port.
# Then: nothing stays in flight, and a calibrated probe (a beside call that fits on B unless B still counts the dead
# calls' KV) does not spill off B.
import asyncio, json, sys, os, signal

sys.path.insert(0, "/tmp/rev51")
from h import *

TREE = sys.argv[1] if len(sys.argv) > 1 else "/tmp/snap51"
P = int(sys.argv[2]) if len(sys.argv) > 2 else 24900
CAP = 4224


async def stream(s, url, msgs, hdr, mt):
    body = {"model": "saga-sim", "messages": msgs, "max_tokens": mt, "stream": True, "ignore_eos": True}
    rep = None
    try:
        async with s.post(
            url + "/v1/chat/completions", json=body, headers=hdr, timeout=aiohttp.ClientTimeout(total=60)
        ) as r:
            rep = r.headers.get("X-Saga-Replica")
            n = 0
            async for _ in r.content:
                n += 1
            return r.status, rep, n
    except Exception as e:
        return type(e).__name__, rep, -1


async def probe_on(s, url, target, tag):
    """Find a new session bound to `target`, then send one beside call sized to fit there with ~900 tokens to spare."""
    for k in range(12):
        sid = f"{tag}-{k}"
        hdr = {"X-Session-ID": sid}
        sysm = {"role": "system", "content": "probe " + words(40, k)}
        st0 = await get(s, url, "/saga/v1/state")
        c = await chat(s, url, [sysm, {"role": "user", "content": "hi"}], headers=hdr, max_tokens=8)
        if c[3].get("X-Saga-Replica") != target:
            continue
        st1 = await get(s, url, "/saga/v1/state")
        R = st1["admission"]["reserved_tokens"].get(target, 0)
        fp = R - st0["admission"]["reserved_tokens"].get(target, 0)
        lt = asyncio.create_task(
            chat(
                s,
                url,
                [sysm, {"role": "user", "content": "long"}],
                headers=hdr,
                max_tokens=400,
                extra={"ignore_eos": True},
            )
        )
        await asyncio.sleep(0.15)
        prompt_est = 70
        # R + tk + max(0, tk - fp) <= CAP - 900
        room = CAP - 900 - R
        tk = (room + fp) // 2 if (room + fp) // 2 > fp else room
        T = max(1, tk - prompt_est)
        b = await chat(s, url, [sysm, {"role": "user", "content": "beside"}], headers=hdr, max_tokens=T)
        await lt
        st2 = await get(s, url, "/saga/v1/state")
        return dict(
            R=R,
            fp=fp,
            T=T,
            beside_on=b[3].get("X-Saga-Replica", "")[-5:],
            spilled=st2["spills"] - st1["spills"],
        )
    return None


async def main():
    pa = start(
        TREE,
        ["sim", "--replicas", "1", "--base-port", str(P), "--profile", "tiny-cpu", "--time-scale", "0.2"],
        "s2_simA.log",
    )
    pb = start(
        TREE,
        ["sim", "--replicas", "1", "--base-port", str(P + 1), "--profile", "tiny-cpu", "--time-scale", "0.2"],
        "s2_simB.log",
    )
    wait_port(P)
    wait_port(P + 1)
    A, B = f"http://127.0.0.1:{P}", f"http://127.0.0.1:{P + 1}"
    pp, url = start_proxy(TREE, P + 10, [A, B])
    lines, bad = [], []
    try:
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, url, 2)
            ctl = await probe_on(s, url, B, "ctl")
            lines.append(f"control probe on B (before any kill): {ctl}")
            # session bound to A, fan out so calls spill to B
            for k in range(8):
                sid = f"victim-{k}"
                hdr = {"X-Session-ID": sid}
                sysm = {"role": "system", "content": "victim " + words(60, 100 + k)}
                c = await chat(
                    s, url, [sysm, {"role": "user", "content": "first"}], headers=hdr, max_tokens=8
                )
                if c[3].get("X-Saga-Replica") == A:
                    break
            st0 = await get(s, url, "/saga/v1/state")
            tasks = [
                asyncio.create_task(stream(s, url, [sysm, {"role": "user", "content": "long"}], hdr, 300))
            ]
            await asyncio.sleep(0.2)
            tasks += [
                asyncio.create_task(
                    stream(
                        s, url, [sysm, {"role": "user", "content": f"side {i} " + words(40, i)}], hdr, 1800
                    )
                )
                for i in range(4)
            ]
            await asyncio.sleep(0.8)
            mid = await get(s, url, "/saga/v1/state")
            os.killpg(pb.pid, signal.SIGKILL)
            PROCS.remove(pb)
            res = await asyncio.gather(*tasks)
            lines.append(
                f"victim bound={A[-5:]} spills during fan-out={mid['spills'] - st0['spills']} results(status,replica,chunks)={[(r[0], (r[1] or '')[-5:], r[2]) for r in res]}"
            )
            await asyncio.sleep(1.0)
            st = await get(s, url, "/saga/v1/state")
            lines.append(f"after kill={summarize(st)}")
            pb2 = start(
                TREE,
                [
                    "sim",
                    "--replicas",
                    "1",
                    "--base-port",
                    str(P + 1),
                    "--profile",
                    "tiny-cpu",
                    "--time-scale",
                    "0.2",
                ],
                "s2_simB2.log",
            )
            wait_port(P + 1)
            await wait_ready(s, url, 2)
            await asyncio.sleep(1.0)
            pr = await probe_on(s, url, B, "after")
            lines.append(f"probe on B after restart: {pr}")
            st = await quiesce_state(s, url, 2)
            e = summarize(st)
            lines.append(f"end={e}")
            if e["in_flight"] or any(v[0] for v in e["reps"].values()):
                bad.append("stuck in flight")
            if pr and ctl and pr["spilled"] > ctl["spilled"]:
                bad.append("probe spilled after the kill, not before")
            if pr is None:
                bad.append("no session bound to B after restart")
    finally:
        stop_all()
    print(("DEFECT" if bad else "OK") + f": tree={TREE} bad={bad} | " + " | ".join(lines))


asyncio.run(main())
