# ruff: noqa
import os, signal, subprocess, time, json, contextlib, urllib.request, sys


def wait_http(url, t=60):
    end = time.time() + t
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return True
        except Exception:
            time.sleep(0.2)
    raise RuntimeError("not up: " + url)


@contextlib.contextmanager
def stack(
    tree,
    sim_port,
    proxy_port,
    policy="saga",
    workers=1,
    sim_args=("--profile", "tiny-cpu"),
    extra=(),
    replicas=2,
    log="/tmp/reviewR/logs",
    time_scale=None,
):
    os.makedirs(log, exist_ok=True)
    procs = []
    tag = f"{os.path.basename(tree)}-{proxy_port}"
    try:
        sargs = [
            "python3",
            "-m",
            "proxy",
            "sim",
            "--replicas",
            str(replicas),
            "--base-port",
            str(sim_port),
            *sim_args,
        ]
        procs.append(
            subprocess.Popen(
                sargs,
                cwd=tree,
                start_new_session=True,
                stdout=open(f"{log}/sim-{tag}.log", "w"),
                stderr=subprocess.STDOUT,
            )
        )
        for i in range(replicas):
            wait_http(f"http://127.0.0.1:{sim_port + i}/health")
        pargs = [
            "python3",
            "-m",
            "proxy",
            "serve",
            "--port",
            str(proxy_port),
            "--policy",
            policy,
            "--health-interval-s",
            "0.2",
            "--workers",
            str(workers),
            "--no-access-log",
            *extra,
        ]
        if time_scale:
            pargs += ["--time-scale", str(time_scale)]
        for i in range(replicas):
            pargs += ["--replica", f"http://127.0.0.1:{sim_port + i}"]
        procs.append(
            subprocess.Popen(
                pargs,
                cwd=tree,
                start_new_session=True,
                stdout=open(f"{log}/proxy-{tag}.log", "w"),
                stderr=subprocess.STDOUT,
            )
        )
        wait_http(f"http://127.0.0.1:{proxy_port}/health")
        yield f"http://127.0.0.1:{proxy_port}"
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def get(url):
    return json.loads(urllib.request.urlopen(url, timeout=10).read())


def post_sync(url, body, headers=None, path="/v1/chat/completions"):
    req = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    t = time.time()
    with urllib.request.urlopen(req, timeout=120) as r:
        data = json.loads(r.read())
        return data, r.headers.get("X-Session-ID"), r.headers.get("X-Saga-Replica"), time.time() - t
