# ruff: noqa
"""Agents sharing one prompt_cache_key (an app sending its user id as the key), under KV pressure.

12 agent conversations at once, each 8 calls whose context grows ~400 tokens a turn from ~1,500, with 0.3 s
tool gaps, all sending `"prompt_cache_key": "user-1"`; two simulated replicas of 600 blocks (time scale 20).
Prints the mean and max task completion time and calls answered for: `saga` with the key, `saga` with no
key (sessions inferred), and `round-robin` with the key. Env SAGA_TREE: the checkout to run (compiled).
"""

import asyncio, json, os, signal, socket, subprocess, sys, time, itertools
import aiohttp

TREE = os.environ.get("SAGA_TREE", "/tmp/snap49")
WORK = "/tmp/rev49"
_PROCS = []


def _port_open(port):
    s = socket.socket()
    s.settimeout(0.2)
    try:
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def start(args, log, ports, timeout=40):
    env = dict(os.environ, PYTHONPATH=TREE)
    f = open(os.path.join(WORK, log), "w")
    p = subprocess.Popen(
        [sys.executable, "-m", "proxy", *args],
        cwd=TREE,
        env=env,
        stdout=f,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _PROCS.append(p)
    t0 = time.time()
    while time.time() - t0 < timeout:
        if all(_port_open(pt) for pt in ports):
            return p
        if p.poll() is not None:
            raise RuntimeError(f"{args} exited {p.returncode}; see {log}")
        time.sleep(0.2)
    raise RuntimeError(f"{args} not up in {timeout}s")


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(5)


def stop_all():
    for p in reversed(_PROCS):
        stop(p)
    _PROCS.clear()


def sim(base, n=1, blocks=600, scale=200.0, profile="llama3-8b-h100", log=None):
    return start(
        [
            "sim",
            "--base-port",
            str(base),
            "--replicas",
            str(n),
            "--profile",
            profile,
            "--num-gpu-blocks-override",
            str(blocks),
            "--model",
            "saga-sim",
            "--time-scale",
            str(scale),
        ],
        log or f"sim{base}.log",
        [base + i for i in range(n)],
    )


def serve(port, replicas, policy="saga", extra=(), config=None, log=None):
    args = ["serve", "--port", str(port), "--health-interval-s", "0.2"] + (
        ["--policy", policy] if policy else []
    )
    for r in replicas:
        args += ["--replica", f"http://127.0.0.1:{r}"]
    if config is not None:
        path = os.path.join(WORK, f"cfg{port}.yaml")
        with open(path, "w") as fh:
            fh.write(config)
        args += ["--config", path]
    args += list(extra)
    p = start(args, log or f"proxy{port}.log", [port])
    time.sleep(1.0)  # first health probe / metrics scrape
    return p


async def chat(http, port, messages, headers=None, max_tokens=8, timeout=30.0, stream=False, system=None):
    body = {"model": "saga-sim", "messages": messages, "max_tokens": max_tokens}
    if stream:
        body["stream"] = True
    t0 = time.monotonic()
    try:
        async with http.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json=body,
            headers=headers or {},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as r:
            text = await r.text()
            return r.status, time.monotonic() - t0, r.headers.get("X-Session-ID"), text
    except asyncio.TimeoutError:
        return "timeout", time.monotonic() - t0, None, ""


async def get_json(http, port, path):
    async with http.get(f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=10)) as r:
        return await r.json()


async def admission(http, port):
    return (await get_json(http, port, "/saga/v1/state")).get("admission", {})


def run_main(coro_fn):
    os.makedirs(WORK, exist_ok=True)
    try:
        line = asyncio.run(coro_fn())
    except Exception as e:  # noqa
        line = f"ERROR: {type(e).__name__}: {e}"
    finally:
        stop_all()
    print(line, flush=True)


# ---- end harness ----

import random
import statistics


async def agent(http, port, idx, key, out):
    rng = random.Random(idx)
    messages = [
        {"role": "system", "content": "You are a coding agent. " * 40},
        {"role": "user", "content": f"task {idx}: " + "context " * rng.randint(1000, 1200)},
    ]
    t0 = time.monotonic()
    for turn in range(8):
        body = {"model": "saga-sim", "max_tokens": 150, "messages": messages}
        if key:
            body["prompt_cache_key"] = key
        async with http.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json=body,
            timeout=aiohttp.ClientTimeout(total=180),
        ) as r:
            answer = await r.json()
            if r.status != 200:
                out["failed"] += 1
                return
        out["calls"] += 1
        messages.append(answer["choices"][0]["message"])
        messages.append({"role": "user", "content": f"tool result {turn}: " + "line " * 400})
        await asyncio.sleep(0.3)
    out["tct"].append(time.monotonic() - t0)


async def scenario(port, key):
    out = {"calls": 0, "failed": 0, "tct": []}
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(agent(http, port, i, key, out) for i in range(12)))
    tct = out["tct"]
    mean = statistics.mean(tct) if tct else float("nan")
    return f"tasks {len(tct)}/12 mean {mean:.1f} s max {max(tct, default=float('nan')):.1f} s calls {out['calls']} failed {out['failed']}"


async def main():
    lines = []
    for i, (policy, key) in enumerate((("saga", "user-1"), ("saga", None), ("round-robin", "user-1"))):
        sim(22700 + 10 * i, 2, blocks=600, scale=1.0)
        p = serve(22720 + i, [22700 + 10 * i, 22701 + 10 * i], policy)
        lines.append(f"{policy} key={key}: " + await scenario(22720 + i, key))
        stop_all()
    return "RESULT: " + " | ".join(lines)


if __name__ == "__main__":
    run_main(main)
