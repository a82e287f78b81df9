# ruff: noqa
import json, os, signal, subprocess, sys, time, urllib.request, urllib.error, tempfile, socket

ROOT = os.environ.get(
    "SAGA_ROOT",
    os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..")),
)
ENV = dict(os.environ, PYTHONPATH=ROOT)
PROCS = []
LOGS = tempfile.mkdtemp(prefix="saga-r14-")


def start(args, log, module=True):
    f = open(os.path.join(LOGS, log), "w")
    cmd = [sys.executable, "-m", "proxy.cli"] + args if module else [sys.executable] + args
    p = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    PROCS.append(p)
    return p


def wait_port(port, path="/health", timeout=40):
    t = time.time()
    while time.time() - t < timeout:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2).read()
            return True
        except urllib.error.HTTPError as e:
            if e.code < 500 or e.code == 503:
                return True
        except Exception:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"port {port} not up")


def stop_all():
    for p in PROCS:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except Exception:
            pass
    for p in PROCS:
        try:
            p.wait(timeout=10)
        except Exception:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except Exception:
                pass


def req(port, method, path, body=None, headers=None, timeout=30):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    r = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(r, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def proxy(port, replicas, config=None, extra=(), tag="p"):
    args = ["serve"]
    for u in replicas:
        args += ["--replica", u]
    args += ["--port", str(port), "--health-interval-s", "0.5"]
    if config:
        path = os.path.join(LOGS, f"{tag}.yaml")
        open(path, "w").write(config)
        args += ["--config", path]
    args += list(extra)
    start(args, f"{tag}.log")
    wait_port(port)
    time.sleep(1.0)
