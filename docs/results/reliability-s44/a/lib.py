"""Helpers for the repro scripts: start `saga sim` / `saga serve` from the tree (SAGA_TREE, default this checkout) on loopback ports 23000-23999,
and kill them (by pid, process group) at exit."""

# ruff: noqa
import os as _os, pathlib as _pl

TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44a", exist_ok=True)
import atexit, json, os, signal, socket, subprocess, sys, time, urllib.request

SNAP = TREE
ENV = {**os.environ, "PYTHONPATH": SNAP}
_procs = []


def saga(args, env=None, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", *args],
        env={**ENV, **(env or {})},
        stdout=kw.pop("stdout", subprocess.PIPE),
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kw,
    )


def run_saga(args, env=None, timeout=20):
    p = subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args],
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return p.returncode, p.stdout + p.stderr


def start(args, env=None, wait_port=None, log=None):
    out = open(log, "w") if log else subprocess.DEVNULL
    p = saga(args, env, stdout=out)
    _procs.append(p)
    if wait_port:
        wait_up(wait_port)
    return p


def wait_up(port, path="/health", timeout=20):
    t = time.time() + timeout
    while time.time() < t:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"port {port} did not come up")


def stop(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait()


@atexit.register
def _cleanup():
    for p in _procs:
        stop(p)


def http(method, url, body=None, headers=None, timeout=10):
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    h = {"content-type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        r = urllib.request.urlopen(req, timeout=timeout)
        return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()
