# ruff: noqa
"""--workers 2: merged /metrics sums the tenant token counters of both workers; killing a worker never makes
them go down (carried), and the sum equals the served usage."""

import asyncio, json, os, signal, subprocess, sys
from common import *
import aiohttp
from prometheus_client.parser import text_string_to_metric_families

U = {
    "prompt_tokens": 10,
    "completion_tokens": 3,
    "total_tokens": 13,
    "prompt_tokens_details": {"cached_tokens": 2},
}


async def handler(m, path, hd, body):
    yield (
        "w",
        json_answer(
            {
                "id": "x",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
                ],
                "usage": U,
            }
        ),
    )


def totals(text):
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name.startswith("saga_tenant_") and fam.name.endswith("_tokens"):
            for s in fam.samples:
                if s.name.endswith("_total"):
                    out[(fam.name, s.labels["tenant"])] = s.value
    return out


async def main():
    port = 28170
    rep = FakeReplica(28171, handler)
    rurl = await rep.start()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--replica",
            rurl,
            "--port",
            str(port),
            "--workers",
            "2",
            "--no-access-log",
            "--health-interval-s",
            "30",
        ],
        cwd=TREE,
        env=dict(os.environ, PYTHONPATH=TREE),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    res = []
    try:
        conn = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=conn) as h:
            for _ in range(150):
                await asyncio.sleep(0.1)
                try:
                    async with h.get(url + "/health") as r:
                        if r.status == 200:
                            break
                except Exception:
                    pass
            await asyncio.sleep(1)
            N = 40

            async def call(i):
                b = {"model": "m", "messages": [{"role": "user", "content": f"c{i}"}]}
                async with h.post(
                    url + "/v1/chat/completions",
                    json=b,
                    headers={"X-Tenant-ID": f"t{i % 2}", "X-Session-ID": f"s{i}"},
                ) as r:
                    await r.read()
                    return r.status

            statuses = [await call(i) for i in range(N)]
            await asyncio.sleep(0.5)
            async with h.get(url + "/metrics") as r:
                before = totals(await r.text())
            want = {t: N // 2 * 10 for t in ("t0", "t1")}
            got = {t: before.get(("saga_tenant_prompt_tokens", t)) for t in ("t0", "t1")}
            ok = got == want and all(s == 200 for s in statuses)
            res.append(("OK" if ok else "DEFECT") + f": workers=2 summed prompt tokens {got} want {want}")
            # kill one worker
            kids = subprocess.run(
                ["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True
            ).stdout.split()
            workers = [int(k) for k in kids]
            if workers:
                os.kill(workers[0], signal.SIGKILL)
            dips = []
            for _ in range(30):
                await asyncio.sleep(0.2)
                try:
                    async with h.get(url + "/metrics") as r:
                        now = totals(await r.text())
                    for k, v in before.items():
                        if now.get(k, 0) < v:
                            dips.append((k, v, now.get(k, 0)))
                except Exception:
                    pass
            statuses = [await call(i) for i in range(N, N + 10)]
            await asyncio.sleep(0.5)
            async with h.get(url + "/metrics") as r:
                after = totals(await r.text())
            res.append(
                ("DEFECT" if dips else "OK")
                + f": after a worker SIGKILL counters never decreased (killed {workers[:1]}, dips {dips[:3]})"
            )
            wantp = (N + 10) // 2 * 10
            gotp = {t: after.get(("saga_tenant_prompt_tokens", t)) for t in ("t0", "t1")}
            res.append(
                ("OK" if all(v == wantp for v in gotp.values()) else "DEFECT")
                + f": after restart, sums {gotp} want {wantp} each (statuses {set(statuses)})"
            )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except Exception:
            os.killpg(proc.pid, signal.SIGKILL)
        await rep.stop()
    for l in res:
        print(l)


asyncio.run(main())
