# ruff: noqa
"""D01: calls waiting for admission (policy `saga`, the default) leave no trace in `saga_queue_depth`
nor in `/saga/v1/queue`'s `queued`.

Setup: one simulated replica with 200 KV blocks (3,200 tokens), default `saga` policy; an agent type is
proven (one session of 3 growing calls), then 10 agent sessions start at once, so most of them wait in
the proxy for admission.
What the operator sees: `/saga/v1/queue` lists N entries under `waiting` (`where: admission`) and
`/saga/v1/state` says `admission.waiting: N`, yet `/saga/v1/queue` says `queued: 0` and the gauge
`saga_queue_depth` ("calls held in the proxy's queue", docs/observability.md) is 0; no `saga_*` series
counts the calls waiting for admission at all, so a dashboard/alert built from /metrics never sees
the wait.
What it should be: `saga_queue_depth` (or a documented series) and `queued` count the calls held in
admission too (they are held in the proxy), or the docs say they don't and name a series that does.
"""

import asyncio, json, os, signal, socket, subprocess, sys, time, urllib.request

TREE = os.environ.get("SAGA_TREE", "/tmp/snap48")
WORK = "/tmp/rev48b"
PROCS = []


def free_port(lo, hi):
    for p in range(lo, hi):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            s.close()
            return p
        except OSError:
            s.close()
    raise SystemExit("no port")


def start(args, name, env=None):
    e = dict(os.environ, PYTHONPATH=TREE)
    e.update(env or {})
    log = open(f"{WORK}/{name}.log", "w")
    p = subprocess.Popen(
        ["timeout", "170", sys.executable, "-m", "proxy", *args],
        cwd=TREE,
        env=e,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    PROCS.append(p)
    return p


def stop_all():
    for p in PROCS:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in PROCS:
        try:
            p.wait(5)
        except Exception:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def getj(url):
    return json.loads(get(url))


def wait_up(url, t=40):
    end = time.time() + t
    while time.time() < end:
        try:
            get(url, 2)
            return True
        except Exception:
            time.sleep(0.3)
    raise SystemExit(f"not up: {url}")


def metric(text, name, labels=None):
    tot = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if line.startswith(name + " ") or line.startswith(name + "{"):
            if labels and not all(f'{k}="{v}"' in line for k, v in labels.items()):
                continue
            tot = (tot or 0) + float(line.rsplit(" ", 1)[1])
    return tot


def fleet(blocks=60, replicas=1, scale=1.0, config=None, extra=(), env=None, base=None):
    base = base or free_port(23100, 23500)
    start(
        [
            "sim",
            "--base-port",
            str(base),
            "--replicas",
            str(replicas),
            "--profile",
            "llama3-8b-h100",
            "--num-gpu-blocks-override",
            str(blocks),
            "--model",
            "saga-sim",
            "--time-scale",
            str(scale),
        ],
        "sim",
    )
    for i in range(replicas):
        wait_up(f"http://127.0.0.1:{base + i}/health")
    port = free_port(base + replicas + 1, 23990)
    args = ["serve", "--port", str(port), "--time-scale", str(scale)]
    for i in range(replicas):
        args += ["--replica", f"http://127.0.0.1:{base + i}"]
    if config:
        path = f"{WORK}/cfg_{port}.yaml"
        open(path, "w").write(config)
        args += ["--config", path]
    args += list(extra)
    start(args, f"serve_{port}", env)
    wait_up(f"http://127.0.0.1:{port}/health")
    return f"http://127.0.0.1:{port}", [f"http://127.0.0.1:{base + i}" for i in range(replicas)]


WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def text(n, seed):
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] + str((seed + i) % 97) for i in range(n))


async def call(session, proxy, sid, messages, agent="coder", max_tokens=64, timeout=120, headers=None):
    import aiohttp

    h = {"X-Session-ID": sid, "X-Agent-Type": agent}
    h.update(headers or {})
    body = {"model": "saga-sim", "messages": messages, "max_tokens": max_tokens}
    t0 = time.time()
    async with session.post(
        proxy + "/v1/chat/completions", json=body, headers=h, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as r:
        data = await r.read()
        return r.status, time.time() - t0, data, dict(r.headers)


async def agent(
    session,
    proxy,
    sid,
    calls=4,
    first=400,
    tool=200,
    gap=0.5,
    agent_type="coder",
    out=None,
    max_tokens=64,
    headers=None,
):
    msgs = [
        {"role": "system", "content": "You are agent " + agent_type},
        {"role": "user", "content": text(first, hash(sid) % 1000)},
    ]
    res = []
    for i in range(calls):
        st, dt, data, hd = await call(session, proxy, sid, msgs, agent_type, max_tokens, headers=headers)
        res.append((st, dt, hd))
        if out is not None:
            out.append((sid, i, st, dt, time.time(), hd))
        if st != 200:
            break
        try:
            ans = json.loads(data)["choices"][0]["message"].get("content") or "ok"
        except Exception:
            ans = "ok"
        msgs = msgs + [
            {"role": "assistant", "content": ans},
            {"role": "user", "content": "tool result: " + text(tool, i)},
        ]
        await asyncio.sleep(gap)
    return res


async def main():
    import aiohttp

    proxy, reps = fleet(blocks=200, scale=1.0)
    best = None
    async with aiohttp.ClientSession() as s:
        await agent(s, proxy, "warm", calls=3, first=150, tool=100, gap=0.2)
        tasks = [
            asyncio.create_task(agent(s, proxy, f"s{i}", calls=3, first=150, tool=100, gap=1.0))
            for i in range(10)
        ]
        for _ in range(60):
            await asyncio.sleep(0.25)
            m = await asyncio.to_thread(get, proxy + "/metrics")
            q = await asyncio.to_thread(getj, proxy + "/saga/v1/queue")
            st = await asyncio.to_thread(getj, proxy + "/saga/v1/state")
            n_adm = sum(1 for w in q["waiting"] if w["where"] == "admission")
            row = (n_adm, st["admission"]["waiting"], q["queued"], metric(m, "saga_queue_depth"))
            if best is None or row[0] > best[0]:
                best = row
            if all(t.done() for t in tasks):
                break
        await asyncio.wait(tasks, timeout=30)
    n_adm, st_wait, queued, depth = best
    if n_adm > 0 and (depth == 0 or queued == 0):
        print(
            f"DEFECT: {n_adm} calls listed waiting for admission in /saga/v1/queue (state admission.waiting={st_wait}) "
            f"while /saga/v1/queue queued={queued} and saga_queue_depth={depth:g}"
        )
    elif n_adm == 0:
        print("OK: no call waited for admission (could not reproduce the wait)")
    else:
        print(f"OK: {n_adm} waiting, queued={queued}, saga_queue_depth={depth:g}")


try:
    asyncio.run(main())
finally:
    stop_all()
