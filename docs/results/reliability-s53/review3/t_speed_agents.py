# ruff: noqa
"""Replica speed with realistic agent traffic: N agents (X-Session-ID each), contexts growing every call
(a tool output of 200-1500 words appended, answers 40-400 tokens, ignore_eos). Two single-replica sims:
FAST at time-scale TS_FAST, SLOW at TS_SLOW (same profile) - or the same for an identical fleet.
CACHE=0 puts a shim that drops cached-token reporting in front of each replica.
Per tree: first time the slow replica's slowness >= 1.5 appears, final slowness, calls per replica.
usage: t_speed_agents.py TS_FAST TS_SLOW CACHE(1/0) DUR BASEPORT"""

import asyncio, json, os, random, signal, subprocess, sys, time
import aiohttp

TS_FAST, TS_SLOW, CACHE, DUR, BP = (
    sys.argv[1],
    sys.argv[2],
    sys.argv[3] == "1",
    float(sys.argv[4]),
    int(sys.argv[5]),
)
N = int(os.environ.get("N", 8))
PROFILE = os.environ.get("PROFILE", "llama3-8b-h100")
TREES = [("PREV", "/tmp/snap53a"), ("AFTER", "/tmp/snap53d")]
LOG = "/tmp/rev53d/logs"
procs = []


def start(args, cwd, log, mod=True):
    cmd = [sys.executable, "-m", "proxy", *args] if mod else [sys.executable, *args]
    p = subprocess.Popen(
        cmd, cwd=cwd, start_new_session=True, stdout=open(f"{LOG}/{log}", "w"), stderr=subprocess.STDOUT
    )
    procs.append(p)
    return p


def words(n, r):
    return " ".join(f"w{r.randrange(100000)}" for _ in range(n))


async def up(s, url):
    for _ in range(300):
        try:
            async with s.get(url) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("not up " + url)


async def agent(s, url, i, end, where, r):
    msgs = [
        {"role": "system", "content": f"You are agent {i}."},
        {"role": "user", "content": f"Task {i}: " + words(600, r)},
    ]
    sid = f"ag{i}-{time.time()}"
    while time.time() < end:
        mt = r.randint(40, 400)
        body = {"model": "saga-sim", "max_tokens": mt, "ignore_eos": True, "messages": msgs}
        try:
            async with s.post(
                url + "/v1/chat/completions",
                json=body,
                headers={"X-Session-ID": sid},
                timeout=aiohttp.ClientTimeout(total=120),
            ) as resp:
                d = await resp.json()
                rep = resp.headers.get("X-Saga-Replica")
            where[rep] = where.get(rep, 0) + 1
            msgs = msgs + [
                {"role": "assistant", "content": d["choices"][0]["message"]["content"]},
                {"role": "user", "content": "tool output: " + words(r.randint(200, 1500), r)},
            ]
            if len(msgs) > int(os.environ.get("MAXMSG", 24)):  # a new task
                msgs = msgs[:1] + [{"role": "user", "content": f"Task {i}b: " + words(600, r)}]
                sid = f"ag{i}b-{time.time()}"
        except Exception as e:
            where["err"] = where.get("err", 0) + 1
            where.setdefault("err1", repr(e)[:100])
            await asyncio.sleep(0.5)
        await asyncio.sleep(r.uniform(0.05, 0.4))


async def run(name, tree, bp):
    sf, ss, pp = bp, bp + 1, bp + 5
    start(
        ["sim", "--replicas", "1", "--base-port", str(sf), "--profile", PROFILE, "--time-scale", TS_FAST],
        tree,
        f"sp-{name}-{bp}-f.log",
    )
    start(
        [
            "sim",
            "--replicas",
            "1",
            "--base-port",
            str(ss),
            "--profile",
            os.environ.get("PROFILE_SLOW", PROFILE),
            "--time-scale",
            TS_SLOW,
        ],
        tree,
        f"sp-{name}-{bp}-s.log",
    )
    rf, rs = sf, ss
    if not CACHE:
        start(
            [
                os.path.join(os.path.dirname(os.path.abspath(__file__)), "nocache_shim.py"),
                str(sf + 2),
                str(sf),
            ],
            tree,
            f"sh-{bp}-f.log",
            mod=False,
        )
        start(
            [
                os.path.join(os.path.dirname(os.path.abspath(__file__)), "nocache_shim.py"),
                str(ss + 2),
                str(ss),
            ],
            tree,
            f"sh-{bp}-s.log",
            mod=False,
        )
        rf, rs = sf + 2, ss + 2
    async with aiohttp.ClientSession() as s:
        await up(s, f"http://127.0.0.1:{sf}/health")
        await up(s, f"http://127.0.0.1:{ss}/health")
        if not CACHE:
            await asyncio.sleep(1.5)
        fast, slow = f"http://127.0.0.1:{rf}", f"http://127.0.0.1:{rs}"
        start(
            ["serve", "--port", str(pp), "--no-access-log", "--replica", fast, "--replica", slow],
            tree,
            f"sp-{name}-{bp}-p.log",
        )
        url = f"http://127.0.0.1:{pp}"
        await up(s, url + "/health")
        t0 = time.time()
        end = t0 + DUR
        where = {}
        first = {}
        trace = []

        async def poll():
            while time.time() < end:
                async with s.get(url + "/saga/v1/replicas") as r:
                    d = await r.json()
                reps = d if isinstance(d, list) else d.get("replicas", d)
                sl = {x["replica_id"]: x["slowness"] for x in reps}
                for k, v in sl.items():
                    if v >= 1.5 and k not in first:
                        first[k] = round(time.time() - t0, 1)
                trace.append(
                    (
                        round(time.time() - t0),
                        {("F" if k == fast else "S"): round(v, 2) for k, v in sl.items()},
                    )
                )
                await asyncio.sleep(1)

        await asyncio.gather(poll(), *[agent(s, url, i, end, where, random.Random(i)) for i in range(N)])
        async with s.get(url + "/saga/v1/replicas") as r:
            d = await r.json()
        reps = d if isinstance(d, list) else d.get("replicas", d)
        sl = {("F" if x["replica_id"] == fast else "S"): round(x["slowness"], 2) for x in reps}
        w = {("F" if k == fast else "S" if k == slow else k): v for k, v in where.items()}
        fs = {("F" if k == fast else "S"): v for k, v in first.items()}
        print(
            f"{name}: first>=1.5 at {fs}  final slowness {sl}  calls {w}  trace(every10s) {trace[::10]}",
            flush=True,
        )
    for p in procs[:]:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        p.wait(10)
        procs.remove(p)
    return fs, sl, w


try:
    R = {}
    for k, (name, tree) in enumerate(TREES):
        R[name] = asyncio.run(run(name, tree, BP + 20 * k))
    print(
        "config: ts",
        TS_FAST,
        TS_SLOW,
        "slow profile",
        os.environ.get("PROFILE_SLOW", PROFILE),
        "cache",
        CACHE,
        "dur",
        DUR,
        "N",
        N,
        "profile",
        PROFILE,
    )
finally:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
