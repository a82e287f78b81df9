# ruff: noqa
import json, os, signal, socket, subprocess, sys, time, urllib.request, urllib.error
import tempfile

LOGS = tempfile.mkdtemp(prefix="saga-s43-")  # logs and configs of one run
ROOT = os.environ.get(
    "SAGA_ROOT", os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
)
ENV = dict(os.environ, PYTHONPATH=ROOT)
PROCS = []


def start(args, log):
    f = open(log, "w")
    p = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli"] + args,
        cwd=ROOT,
        env=ENV,
        stdout=f,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    PROCS.append(p)
    return p


def wait_port(port, path="/health", timeout=40):
    t = time.time()
    while time.time() - t < timeout:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2).read()
            return True
        except urllib.error.HTTPError as e:
            if e.code < 500:
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
            p.wait(timeout=15)
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


def chat(port, messages, headers=None, **extra):
    body = {"model": "saga-sim", "messages": messages, "max_tokens": extra.pop("max_tokens", 8)}
    body.update(extra)
    return req(port, "POST", "/v1/chat/completions", body, headers)


def setup(sim_port, n_rep, proxy_port, extra_args=(), config=None, sim_args=(), tag="x"):
    start(
        ["sim", "--replicas", str(n_rep), "--base-port", str(sim_port), "--time-scale", "20"]
        + list(sim_args),
        os.path.join(LOGS, f"{tag}-sim.log"),
    )
    for i in range(n_rep):
        wait_port(sim_port + i)
    args = ["serve"]
    for i in range(n_rep):
        args += ["--replica", f"http://127.0.0.1:{sim_port + i}"]
    args += ["--port", str(proxy_port), "--time-scale", "20", "--health-interval-s", "0.5"]
    if config:
        path = os.path.join(LOGS, f"{tag}-cfg.yaml")
        open(path, "w").write(config)
        args += ["--config", path]
    args += list(extra_args)
    start(args, os.path.join(LOGS, f"{tag}-proxy.log"))
    wait_port(proxy_port)
    time.sleep(1.0)
