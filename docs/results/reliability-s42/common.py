import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.environ.get("SAGA_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
ENV = {k: v for k, v in os.environ.items() if k != "SAGA_PURE_PYTHON"}
ENV["PYTHONPATH"] = ROOT
HERE = os.path.dirname(os.path.abspath(__file__))
TMP = tempfile.mkdtemp(prefix="saga-s42-")  # logs and configs of one run
_STARTED = []


def _cleanup():
    for p in _STARTED:
        if p.poll() is None:
            with contextlib.suppress(Exception):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


atexit.register(_cleanup)


def wait_http(url, timeout=30, ok_status=(200,)):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except urllib.error.HTTPError as e:
            if e.code in ok_status or e.code == 503:
                return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def start(args, env=None, log=None, cwd=HERE):
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (the child writes it)
    p = subprocess.Popen(
        args, cwd=cwd, env=env or ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    _STARTED.append(p)
    return p


def fake(port, mode="ok", **env):
    e = dict(ENV, **{k: str(v) for k, v in env.items()})
    host = env.get("FAKE_HOST")  # on another loopback address: the discovery scripts' replicas
    p = start([sys.executable, os.path.join(HERE, "fake.py"), str(port), mode], env=e)
    if mode == "health_hang":
        time.sleep(1.0)
    else:
        wait_http(f"http://{host or '127.0.0.1'}:{port}/health", ok_status=(200,))
    return p


def proxy(port, replicas, extra=(), log=None, config=None):
    args = [sys.executable, "-m", "proxy.cli", "serve", "--port", str(port)]
    for r in replicas:
        args += ["--replica", r]
    if config:
        args += ["--config", config]
    args += list(extra)
    p = start(args, log=log, cwd=ROOT)
    wait_http(f"http://127.0.0.1:{port}/health")
    return p


def stop(p):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def get(url, headers=None, timeout=10):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def post(url, body, headers=None, timeout=30):
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def chat(base, content="hello", sid=None, model="saga-sim", timeout=30, stream=False):
    h = {"X-Session-ID": sid} if sid else {}
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 4}
    if stream:
        body["stream"] = True
    t = time.time()
    try:
        s, b, hd = post(base + "/v1/chat/completions", body, h, timeout=timeout)
    except Exception as e:
        return f"exc:{type(e).__name__}", time.time() - t, str(e).encode(), {}
    return s, time.time() - t, b, hd


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024


def state(base):
    return json.loads(get(base + "/saga/v1/state")[1])


def replicas(base):
    return json.loads(get(base + "/saga/v1/replicas")[1])["replicas"]
