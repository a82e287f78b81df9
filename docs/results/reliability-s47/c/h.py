# ruff: noqa
"""Shared harness: processes in their own groups, always killed."""

import os, sys, time, json, socket, signal, subprocess, urllib.request, urllib.error, atexit, tempfile, shutil

TREE = os.environ.get("SAGA_TREE", "/tmp/snap47b")
PROCS = []
TMPS = []


def tmpdir():
    d = tempfile.mkdtemp(prefix="rev47c_")
    TMPS.append(d)
    return d


def cleanup():
    for p in PROCS:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except Exception:
            pass
        try:
            p.wait(timeout=5)
        except Exception:
            pass
    for d in TMPS:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(cleanup)


def start(args, log=None, env=None):
    e = dict(os.environ)
    e.update(env or {})
    e["PYTHONPATH"] = TREE
    out = open(log, "wb") if log else subprocess.DEVNULL
    p = subprocess.Popen(
        [sys.executable, "-m", "proxy"] + args,
        cwd=TREE,
        env=e,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    PROCS.append(p)
    return p


def wait_port(port, t=30):
    end = time.time() + t
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"port {port} never opened")


def req(port, path, body=None, method=None, headers=None, timeout=30):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    r = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method or ("POST" if data is not None else "GET"),
        headers=h,
    )
    try:
        with urllib.request.urlopen(r, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def sims(n, base, scale=20, extra=()):
    start(
        [
            "sim",
            "--replicas",
            str(n),
            "--base-port",
            str(base),
            "--time-scale",
            str(scale),
            "--profile",
            "tiny-cpu",
            *extra,
        ]
    )
    for i in range(n):
        wait_port(base + i)
    return [f"http://127.0.0.1:{base + i}" for i in range(n)]


def proxy(port, replicas, cfg=None, args=(), log=None, scale=20, env=None):
    a = ["serve", "--port", str(port), "--time-scale", str(scale), "--health-interval-s", "0.5"]
    for r in replicas:
        a += ["--replica", r]
    if cfg:
        d = tmpdir()
        f = os.path.join(d, "c.yaml")
        open(f, "w").write(cfg)
        a += ["--config", f]
    p = start(a + list(args), log=log, env=env)
    wait_port(port)
    return p


def fault(rep, f):
    port = int(rep.rsplit(":", 1)[1])
    return req(port, "/saga/v1/faults", f)


def metric(port, name, **labels):
    _, _, b = req(port, "/metrics")
    tot = 0.0
    found = False
    for line in b.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                tot += float(line.rsplit(" ", 1)[1])
                found = True
    return tot


def state(port):
    return json.loads(req(port, "/saga/v1/state")[2])


CHAT = lambda sid="s1", n=8, **kw: dict(
    {"model": "saga-sim", "messages": [{"role": "user", "content": f"hello {sid}"}], "max_tokens": n}, **kw
)
