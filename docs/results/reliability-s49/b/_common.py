# ruff: noqa
"""Shared helpers for the review scripts (imported by each dNN script from its own folder)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request

import aiohttp

TREE = os.environ.get("SAGA_TREE", "/tmp/snap49")
PROCS: list[subprocess.Popen] = []
LOGDIR = os.environ.get("REVIEW_LOGDIR", "/tmp/reviewB/logs")
os.makedirs(LOGDIR, exist_ok=True)


def _spawn(args: list[str], name: str) -> subprocess.Popen:
    log = open(os.path.join(LOGDIR, name + ".log"), "w")
    p = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", *args],
        cwd=TREE,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    PROCS.append(p)
    return p


def start_sim(
    port: int,
    blocks: int | None = None,
    profile: str | None = None,
    model: str | None = None,
    time_scale: float = 1.0,
    replicas: int = 1,
) -> subprocess.Popen:
    args = [
        "sim",
        "--replicas",
        str(replicas),
        "--base-port",
        str(port),
        "--host",
        "127.0.0.1",
        "--time-scale",
        str(time_scale),
        "--prefix-caching-hash-algo",
        "builtin",
    ]
    if blocks:
        args += ["--num-gpu-blocks-override", str(blocks)]
    if profile:
        args += ["--profile", profile]
    if model:
        args += ["--model", model]
    p = _spawn(args, f"sim{port}")
    for i in range(replicas):
        wait_http(f"http://127.0.0.1:{port + i}/health")
    return p


def start_proxy(
    port: int,
    replicas: list[str],
    policy: str = "saga",
    time_scale: float = 1.0,
    workers: int = 1,
    extra: list[str] | None = None,
) -> subprocess.Popen:
    args = [
        "serve",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--policy",
        policy,
        "--time-scale",
        str(time_scale),
        "--health-interval-s",
        "0.5",
        "--no-access-log",
    ]
    for r in replicas:
        args += ["--replica", r]
    if workers > 1:
        args += ["--workers", str(workers)]
    args += extra or []
    p = _spawn(args, f"proxy{port}_{policy}")
    wait_http(f"http://127.0.0.1:{port}/health", timeout=40, accept=(200, 503))
    return p


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(8)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)
    if p in PROCS:
        PROCS.remove(p)


def stop_all() -> None:
    for p in list(PROCS):
        stop(p)


def wait_http(url: str, timeout: float = 30, accept=(200,)) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status in accept:
                    return
        except urllib.error.HTTPError as e:
            if e.code in accept:
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not up")


def get_json(url: str, timeout: float = 5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def post_json(url: str, body: dict, timeout: float = 10):
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


WORDS = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
    "upsilon phi chi psi omega"
).split()


def text(n_words: int, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) + str(rng.randrange(1000)) for _ in range(n_words))


async def call(
    session: aiohttp.ClientSession,
    base: str,
    sid: str | None,
    messages: list,
    model: str = "saga-sim",
    max_tokens: int = 64,
    timeout: float = 120,
    extra_headers: dict | None = None,
):
    headers = {"Content-Type": "application/json"}
    if sid:
        headers["X-Session-ID"] = sid
    headers.update(extra_headers or {})
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "min_tokens": max_tokens,
        "ignore_eos": True,
    }
    t0 = time.time()
    try:
        async with session.post(
            base + "/v1/chat/completions",
            json=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as r:
            data = await r.read()
            rep = r.headers.get("X-Saga-Replica")
            try:
                j = json.loads(data)
            except Exception:
                j = {"raw": data[:200].decode(errors="replace")}
            return r.status, j, rep, time.time() - t0
    except asyncio.TimeoutError:
        return 0, {"error": "client timeout"}, None, time.time() - t0
    except aiohttp.ClientError as e:
        return -1, {"error": repr(e)}, None, time.time() - t0


async def agent(
    session,
    base,
    sid,
    n_calls,
    first_words,
    add_words,
    tool_s,
    rng,
    max_tokens=64,
    model="saga-sim",
    record=None,
    model_for_call=None,
    timeout=120,
    agent_type="coder",
):
    """One agent task: a growing chat conversation, n_calls calls, tool_s wall seconds between calls.
    Returns (ok, task_seconds, replicas used, statuses)."""
    sysmsg = {"role": "system", "content": "You are a coding agent. " + text(40, random.Random(7))}
    msgs = [sysmsg, {"role": "user", "content": text(first_words, rng)}]
    t0 = time.time()
    reps, statuses = [], []
    ok = True
    for i in range(n_calls):
        m = model_for_call(i) if model_for_call else model
        st, j, rep, dt = await call(
            session,
            base,
            sid,
            msgs,
            model=m,
            max_tokens=max_tokens,
            timeout=timeout,
            extra_headers={"X-Agent-Type": agent_type},
        )
        statuses.append(st)
        reps.append(rep)
        if record is not None:
            record.append((sid, i, st, rep, dt, time.time()))
        if st != 200:
            ok = False
            break
        content = j["choices"][0]["message"]["content"]
        msgs.append({"role": "assistant", "content": content})
        msgs.append({"role": "user", "content": "tool result: " + text(add_words, rng)})
        if i < n_calls - 1 and tool_s:
            await asyncio.sleep(tool_s)
    return ok, time.time() - t0, reps, statuses


def sim_metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        total = 0.0
        for line in r.read().decode().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def start_mangler(port: int, backend: int, mode: str) -> subprocess.Popen:
    log = open(os.path.join(LOGDIR, f"mangler{port}.log"), "w")
    p = subprocess.Popen(
        [
            sys.executable,
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "mangler.py"),
            str(port),
            str(backend),
            mode,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    PROCS.append(p)
    wait_http(f"http://127.0.0.1:{port}/health")
    return p
