# ruff: noqa
import os, signal, subprocess, time, json, contextlib, urllib.request, http.client, socket

AFTER = os.environ.get("AFTER", "/tmp/snap54b")
MID = os.environ.get("MID", "/tmp/snap54")
BEFORE = os.environ.get("BEFORE", "/tmp/snap54base")
LOG = "/tmp/rev54/logs"


def wait_http(url, t=60):
    end = time.time() + t
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError("not up " + url)


@contextlib.contextmanager
def stack(
    tree, sp, pp, workers=1, sim_args=("--time-scale", "50"), extra=(), sim_tree=AFTER, env=None, replicas=2
):
    procs = []
    tag = f"{os.path.basename(tree)}-{pp}"
    try:
        procs.append(
            subprocess.Popen(
                [
                    "python3",
                    "-m",
                    "proxy",
                    "sim",
                    "--replicas",
                    str(replicas),
                    "--base-port",
                    str(sp),
                    *sim_args,
                ],
                cwd=sim_tree,
                start_new_session=True,
                stdout=open(f"{LOG}/sim-{tag}.log", "w"),
                stderr=subprocess.STDOUT,
            )
        )
        for i in range(replicas):
            wait_http(f"http://127.0.0.1:{sp + i}/health")
        args = [
            "python3",
            "-m",
            "proxy",
            "serve",
            "--port",
            str(pp),
            "--workers",
            str(workers),
            "--no-access-log",
            "--health-interval-s",
            "0.2",
            *extra,
        ]
        for i in range(replicas):
            args += ["--replica", f"http://127.0.0.1:{sp + i}"]
        e = dict(os.environ)
        e.update(env or {})
        procs.append(
            subprocess.Popen(
                args,
                cwd=tree,
                start_new_session=True,
                env=e,
                stdout=open(f"{LOG}/proxy-{tag}.log", "w"),
                stderr=subprocess.STDOUT,
            )
        )
        wait_http(f"http://127.0.0.1:{pp}/health")
        yield f"http://127.0.0.1:{pp}"
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def get(url):
    return json.loads(urllib.request.urlopen(url, timeout=10).read())


def post(url, body, headers=None, path="/v1/chat/completions", timeout=120, rawbody=None):
    host = url.split("//")[1]
    c = http.client.HTTPConnection(host, timeout=timeout)
    data = rawbody if rawbody is not None else json.dumps(body).encode()
    c.request("POST", path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    r = c.getresponse()
    txt = r.read()
    sid = r.getheader("X-Session-ID")
    c.close()
    return r.status, txt, sid


def sse_events(txt):
    out = []
    for line in txt.decode().split("\n"):
        if line.startswith("data: ") and line[6:].strip() != "[DONE]":
            out.append(json.loads(line[6:]))
    return out
