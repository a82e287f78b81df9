# ruff: noqa
"""d04: an app naming one session for all its parallel calls (OpenAI's `prompt_cache_key`): saga runs
them on one replica at a time while the other sits idle.

Checks: default `saga` vs `round-robin`, two simulated replicas (600 blocks each, time scale 20), 16 clients
each sending distinct ~1,500-token one-shot prompts with `"prompt_cache_key": "my-app"` in the body (the
OpenAI field for grouping requests that share a prefix; the proxy reads it as the session id), 20 s each.
Samples each replica's running/waiting requests every second.
What a user sees: with saga, in most samples one replica has nothing running while the other has a queue
in its engine (work stealing moves the whole session over now and then, so the idle one alternates);
throughput well below round-robin's.
What it should be: calls of one session that run in parallel, with no shared context to keep, should not
leave a replica idle while the other queues (at least, stealing should spread them, not move the whole
session); or docs should tell users not to send a constant prompt_cache_key.
"""

# ---- harness (copied into each script) ----
import asyncio, json, os, signal, socket, subprocess, sys, time, itertools
import aiohttp

TREE = os.environ.get("SAGA_TREE", "/tmp/snap48")
WORK = "/tmp/rev48a"
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


async def client(http, port, idx, stop_at, out):
    rng = random.Random(idx)
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        body = {
            "model": "saga-sim",
            "max_tokens": 64,
            "prompt_cache_key": "my-app",
            "messages": [
                {
                    "role": "user",
                    "content": f"client {idx} question {n}: " + "word " * rng.randint(1000, 1400),
                }
            ],
        }
        try:
            async with http.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json=body,
                timeout=aiohttp.ClientTimeout(total=max(1.0, stop_at - time.monotonic() + 2)),
            ) as r:
                await r.read()
                out["ok"] += r.status == 200
        except asyncio.TimeoutError:
            pass


async def scenario(port, dur=20.0):
    out = {"ok": 0}
    samples = []
    async with aiohttp.ClientSession() as http:
        stop_at = time.monotonic() + dur

        async def sample():
            while time.monotonic() < stop_at - 1:
                await asyncio.sleep(1)
                row = []
                for rp in (22600, 22601):
                    async with http.get(f"http://127.0.0.1:{rp}/metrics") as r:
                        t = await r.text()
                    v = {
                        l.split("{")[0]: float(l.split()[-1])
                        for l in t.splitlines()
                        if l.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting"))
                    }
                    row.append((v["vllm:num_requests_running"], v["vllm:num_requests_waiting"]))
                samples.append(row)

        await asyncio.gather(sample(), *(client(http, port, i, stop_at, out) for i in range(16)))
    lopsided = sum(1 for (a, b) in samples if (a[0] == 0 and b[1] > 0) or (b[0] == 0 and a[1] > 0))
    return out["ok"], lopsided, len(samples)


async def main():
    sim(22600, 2, blocks=600, scale=20.0)
    p = serve(22610, [22600, 22601], "saga")
    s = await scenario(22610)
    stop(p)
    r = serve(22611, [22600, 22601], "round-robin")
    rr = await scenario(22611)
    msg = (
        f"16 clients, one prompt_cache_key, 2 replicas: saga {s[0]} calls, one replica idle while the other "
        f"queued in {s[1]}/{s[2]} samples; round-robin {rr[0]} calls, {rr[1]}/{rr[2]} samples; saga/rr = {s[0] / max(1, rr[0]):.2f}"
    )
    if s[0] < 0.85 * rr[0] or s[1] > s[2] // 3:
        return "DEFECT: " + msg
    return "OK: " + msg


if __name__ == "__main__":
    run_main(main)
