# ruff: noqa
"""Shared harness for /tmp/reviewC scripts: start sims/proxies of SAGA_TREE, kill them by pid."""

import asyncio, json, os, signal, socket, subprocess, sys, time, contextlib, random
import aiohttp

TREE = os.environ.get("SAGA_TREE", "/tmp/snap49b")
WORK = "/tmp/reviewC/logs"
PROCS = []


def wait_port(port, timeout=40):
    t = time.time()
    while time.time() - t < timeout:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    raise RuntimeError(f"port {port} not up")


def start(args, log, tree=None):
    os.makedirs(WORK, exist_ok=True)
    tree = tree or TREE
    env = dict(os.environ, PYTHONPATH=tree)
    p = subprocess.Popen(
        [sys.executable, "-m", "proxy", *args],
        cwd=tree,
        env=env,
        stdout=open(os.path.join(WORK, log), "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    PROCS.append(p)
    return p


def sims(base, n=2, profile="tiny-cpu", blocks=None, scale=1.0, model="saga-sim", tree=None):
    args = [
        "sim",
        "--replicas",
        str(n),
        "--base-port",
        str(base),
        "--profile",
        profile,
        "--time-scale",
        str(scale),
        "--model",
        model,
    ]
    if blocks:
        args += ["--num-gpu-blocks-override", str(blocks)]
    p = start(args, f"sim_{base}.log", tree)
    for i in range(n):
        wait_port(base + i)
    return p, [f"http://127.0.0.1:{base + i}" for i in range(n)]


def proxy(port, replicas, policy="saga", extra=(), tree=None, config=None):
    args = ["serve", "--port", str(port), "--policy", policy, "--health-interval-s", "0.3", *extra]
    for r in replicas:
        args += ["--replica", r]
    if config:
        path = os.path.join(WORK, f"cfg{port}.yaml")
        os.makedirs(WORK, exist_ok=True)
        open(path, "w").write(config)
        args += ["--config", path]
    p = start(args, f"proxy_{port}.log", tree)
    wait_port(port)
    time.sleep(1.5)
    return p, f"http://127.0.0.1:{port}"


def kill(p):
    with contextlib.suppress(Exception):
        os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(5)
    except Exception:
        with contextlib.suppress(Exception):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(5)


def stop_all():
    for p in reversed(PROCS):
        kill(p)
    PROCS.clear()


def words(n, seed):
    rnd = random.Random(seed)
    return " ".join(f"w{rnd.randrange(100000)}" for _ in range(n))


async def post(sess, url, path, body, headers=None, timeout=120):
    t = time.time()
    try:
        async with sess.post(
            url + path, json=body, headers=headers or {}, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as r:
            txt = await r.text()
            return r.status, txt, time.time() - t, r.headers
    except asyncio.TimeoutError:
        return "timeout", "", time.time() - t, {}


async def get(sess, url, path, headers=None):
    async with sess.get(url + path, headers=headers or {}, timeout=aiohttp.ClientTimeout(total=10)) as r:
        return await r.json()


async def wait_kv(sess, url, n, timeout=20):
    t = time.time()
    while time.time() - t < timeout:
        with contextlib.suppress(Exception):
            j = await get(sess, url, "/saga/v1/replicas")
            reps = j.get("replicas", j) if isinstance(j, dict) else j
            if len(reps) >= n and all(x.get("healthy") and x.get("kv_capacity_tokens") for x in reps):
                return reps
        await asyncio.sleep(0.3)
    return None


def main(coro):
    os.makedirs(WORK, exist_ok=True)
    try:
        line = asyncio.run(coro())
    except Exception as e:
        import traceback

        traceback.print_exc()
        line = f"ERROR: {type(e).__name__}: {e}"
    finally:
        stop_all()
    print(line, flush=True)
