# ruff: noqa
"""Two IDENTICAL simulated replicas (same process, same profile, same time scale). Session P sends long
prompts with 16-token answers, session D short prompts with 256-token answers, one call at a time each.
Prints the proxy's measured `slowness` per replica and where each session ran. Expect 1.0/1.0."""

import asyncio, json, os, random, signal, subprocess, sys, time
import aiohttp

TREE, LOG = os.environ.get("SAGA_TREE", "/tmp/snap53a"), "/tmp/rev53d/logs"
os.makedirs(LOG, exist_ok=True)
SIM, PORT = int(os.environ.get("SIMP", 30300)), int(os.environ.get("PP", 30310))
SCALE = os.environ.get("SCALE", "5")
procs = []


def start(args, log):
    p = subprocess.Popen(
        [sys.executable, "-m", "proxy", *args],
        cwd=TREE,
        start_new_session=True,
        stdout=open(f"{LOG}/{log}", "w"),
        stderr=subprocess.STDOUT,
    )
    procs.append(p)


def words(n, seed):
    r = random.Random(seed)
    return " ".join(f"w{r.randrange(100000)}" for _ in range(n))


async def up(s, url):
    for _ in range(200):
        try:
            async with s.get(url) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        await asyncio.sleep(0.2)


async def loop(s, sid, prompt_words, max_tokens, where, end):
    i = 0
    while time.time() < end:
        i += 1
        body = {
            "model": "saga-sim",
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "messages": [{"role": "user", "content": words(prompt_words, hash(sid) + i)}],
        }
        async with s.post(
            f"http://127.0.0.1:{PORT}/v1/chat/completions", json=body, headers={"X-Session-ID": sid}
        ) as r:
            await r.read()
            where[sid][r.headers.get("X-Saga-Replica")] = (
                where[sid].get(r.headers.get("X-Saga-Replica"), 0) + 1
            )


async def main():
    start(
        [
            "sim",
            "--replicas",
            "2",
            "--base-port",
            str(SIM),
            "--profile",
            os.environ.get("PROFILE", "tiny-cpu"),
            "--time-scale",
            SCALE,
        ],
        "repro-sim.log",
    )
    async with aiohttp.ClientSession() as s:
        await up(s, f"http://127.0.0.1:{SIM}/health")
        await up(s, f"http://127.0.0.1:{SIM + 1}/health")
        start(
            [
                "serve",
                "--port",
                str(PORT),
                "--no-access-log",
                "--replica",
                f"http://127.0.0.1:{SIM}",
                "--replica",
                f"http://127.0.0.1:{SIM + 1}",
            ],
            "repro-proxy.log",
        )
        await up(s, f"http://127.0.0.1:{PORT}/health")
        where = {"P": {}, "D": {}}
        end = time.time() + float(os.environ.get("DUR", 40))
        await asyncio.gather(
            loop(s, "P", int(os.environ.get("PW", 2500)), 16, where, end), loop(s, "D", 20, 256, where, end)
        )
        async with s.get(f"http://127.0.0.1:{PORT}/saga/v1/state") as r:
            st = await r.json()
        print("calls per session per replica:", json.dumps(where))
        print("slowness:", {r["replica_id"]: round(r["slowness"], 2) for r in st["replicas"]})


try:
    asyncio.run(main())
finally:
    for p in reversed(procs):
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        p.wait(10)
