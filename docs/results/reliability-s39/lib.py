"""Helpers for the repro scripts: start sims + proxy, send calls, read state."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import aiohttp

ROOT = os.environ.get("SAGA_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
ENV = dict(os.environ, SAGA_PURE_PYTHON="1", PYTHONPATH=ROOT)


def start_sims(base_port, n, blocks, extra=()):
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "sim",
            "--replicas",
            str(n),
            "--base-port",
            str(base_port),
            "--num-gpu-blocks-override",
            str(blocks),
            *extra,
        ],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    for i in range(n):
        wait_http(f"http://127.0.0.1:{base_port + i}/health")
    return p


def start_proxy(port, replicas, extra=(), config=None, log=None):
    args = [sys.executable, "-m", "proxy.cli", "serve", "--port", str(port)]
    for r in replicas:
        args += ["--replica", r]
    if config:
        args += ["--config", config]
    args += list(extra)
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (the proxy writes it while it runs)
    p = subprocess.Popen(
        args, cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    wait_http(f"http://127.0.0.1:{port}/health")
    return p


def stop(p):
    if p is None or p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(5)
    except Exception:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def wait_http(url, timeout=30):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def post(url, body=None, headers=None):
    req = urllib.request.Request(
        url,
        data=json.dumps(body or {}).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def prompt(words, tag="x"):
    return " ".join(f"{tag}{i}" for i in range(words))


async def chat(session, base, content, sid=None, headers=None, max_tokens=8, timeout=30, model="saga-sim"):  # noqa: ASYNC109
    h = dict(headers or {})
    if sid:
        h["X-Session-ID"] = sid
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
    t0 = time.time()
    try:
        async with session.post(
            f"{base}/v1/chat/completions", json=body, headers=h, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as r:
            text = await r.text()
            return r.status, time.time() - t0, text, dict(r.headers)
    except TimeoutError:
        return "timeout", time.time() - t0, "", {}


def state(base):
    return get(f"{base}/saga/v1/state")[1]


def summary(base):
    s = state(base)
    return {
        "in_flight": s["in_flight"],
        "sessions": s["sessions"],
        "waiting": s["admission"]["waiting"],
        "live": s["admission"]["live"],
        "reserved": s["admission"]["reserved_tokens"],
        "replica_in_flight": [r["in_flight"] for r in s["replicas"]],
    }
