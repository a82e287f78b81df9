"""Helpers for the repro scripts: start sims + proxy, send calls, read state."""

import atexit
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import aiohttp

_STARTED = []  # every process started here, stopped at exit even when a script fails half-way

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
    _STARTED.append(p)
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
    _STARTED.append(p)
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
    except aiohttp.ClientError as e:  # the connection closed, reset or refused: no answer
        return f"conn:{type(e).__name__}", time.time() - t0, str(e), {}


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


def worker_pids(proxy):
    """{worker index: pid} of a `--workers N` proxy started by start_proxy (its supervisor's children)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != proxy.pid:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            if b"SAGA_WORKER_INDEX" in env:
                out[int(env[b"SAGA_WORKER_INDEX"])] = int(pid)
        except (OSError, ValueError, IndexError):
            continue
    return out


@atexit.register
def _stop_all():
    for p in reversed(_STARTED):
        stop(p)
