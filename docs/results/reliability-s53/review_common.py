# ruff: noqa
import os, sys, json, time, http.client, signal, subprocess

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness
from harness import get, wait_http

# The helpers the three reviews' scripts share (review/, review2/, review3/): the trees from the environment
# (each review's README says which), logs in REVIEW_LOG.
AFTER = os.environ.get("AFTER", "/tmp/snap53a")
BEFORE = os.environ.get("BEFORE", "/tmp/snap53base")
LOG = os.environ.get("REVIEW_LOG", "/tmp/rev53/logs")
os.makedirs(LOG, exist_ok=True)

import contextlib


@contextlib.contextmanager
def stack(tree, sim_port, proxy_port, workers=2, extra=(), env=None, time_scale="20"):
    old = dict(os.environ)
    if env:
        os.environ.update(env)
    try:
        with harness.stack(
            tree,
            sim_port,
            proxy_port,
            workers=workers,
            sim_args=("--profile", "tiny-cpu", "--time-scale", time_scale),
            extra=extra,
            log=LOG,
        ) as url:
            os.environ.clear()
            os.environ.update(old)
            yield url
    finally:
        os.environ.clear()
        os.environ.update(old)


def post(url, body, headers=None, path="/v1/chat/completions", conn=None, raw=False):
    host = url.split("//")[1]
    c = conn or http.client.HTTPConnection(host, timeout=120)
    data = json.dumps(body).encode()
    c.request("POST", path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    r = c.getresponse()
    txt = r.read()
    sid = r.getheader("X-Session-ID")
    if conn is None:
        c.close()
    return r.status, txt, sid


def sse_text(txt, path):
    out = []
    for line in txt.decode().split("\n"):
        if line.startswith("data: ") and line[6:].strip() != "[DONE]":
            ev = json.loads(line[6:])
            if path == "/v1/chat/completions":
                for ch in ev.get("choices", []):
                    out.append(ch.get("delta", {}).get("content") or "")
            elif path == "/v1/messages":
                if ev.get("type") == "content_block_delta":
                    out.append(ev["delta"].get("text", ""))
            elif path == "/v1/responses":
                if ev.get("type") == "response.output_text.delta":
                    out.append(ev.get("delta", ""))
    return "".join(out)


def text_of(txt, path, stream=False):
    if stream:
        return sse_text(txt, path)
    d = json.loads(txt)
    if path == "/v1/chat/completions":
        return d["choices"][0]["message"]["content"]
    if path == "/v1/messages":
        return "".join(b.get("text", "") for b in d["content"] if b["type"] == "text")
    if path == "/v1/responses":
        return "".join(
            c.get("text", "") for o in d["output"] if o.get("type") == "message" for c in o["content"]
        )


def body_for(path, system, msgs, n, stream=False):
    """msgs: list of (role, text) with roles user/assistant"""
    if path == "/v1/chat/completions":
        b = {
            "model": "saga-sim",
            "max_tokens": n,
            "ignore_eos": True,
            "messages": ([{"role": "system", "content": system}] if system else [])
            + [{"role": r, "content": t} for r, t in msgs],
        }
    elif path == "/v1/messages":
        b = {
            "model": "saga-sim",
            "max_tokens": n,
            "ignore_eos": True,
            "messages": [{"role": r, "content": t} for r, t in msgs],
        }
        if system:
            b["system"] = system
    else:
        b = {
            "model": "saga-sim",
            "max_output_tokens": n,
            "ignore_eos": True,
            "store": False,
            "input": [{"role": r, "content": t} for r, t in msgs],
        }
        if system:
            b["instructions"] = system
    if stream:
        b["stream"] = True
    return b


def compaction(
    url, i, path="/v1/chat/completions", stream=False, system=None, headers=None, turns=2, quote=None, n=60
):
    """an agent: turns tool-loop calls, a summary call, a new conversation quoting it. returns (s_summary, s_new, summary)"""
    system = system if system is not None else f"You are agent number {i}, a careful coder."
    msgs = [("user", f"Task {i}: refactor module {i} please")]
    for k in range(turns):
        st, txt, s = post(url, body_for(path, system, msgs, n, stream), headers, path)
        assert st == 200, (st, txt[:300])
        msgs += [("assistant", text_of(txt, path, stream)), ("user", f"tool output {k} " + "x" * 200)]
    msgs[-1] = ("user", "Summarize the conversation so far.")
    st, txt, s_sum = post(url, body_for(path, system, msgs, n, stream), headers, path)
    assert st == 200, (st, txt[:300])
    summary = text_of(txt, path, stream)
    return s_sum, summary, system, msgs


def new_conv(
    url,
    system,
    summary,
    path="/v1/chat/completions",
    stream=False,
    headers=None,
    n=20,
    prefix="Summary of the work so far:\n",
):
    st, txt, s = post(url, body_for(path, system, [("user", prefix + summary)], n, stream), headers, path)
    assert st == 200, (st, txt[:300])
    return s


def worker_pids(proxy_port):
    # the serve process's children
    out = subprocess.run(
        ["pgrep", "-f", f"proxy serve --port {proxy_port}"], capture_output=True, text=True
    ).stdout.split()
    return [int(p) for p in out]


def cpu_of(pids):
    t = 0
    for p in pids:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            t += int(f[11]) + int(f[12])
        except Exception:
            pass
    return t / os.sysconf("SC_CLK_TCK")


def children(pp):
    sup = [
        int(p)
        for p in subprocess.run(
            ["pgrep", "-f", f"proxy serve --port {pp} "], capture_output=True, text=True
        ).stdout.split()
    ]
    kids = []
    for s in sup:
        kids += [
            int(p)
            for p in subprocess.run(["pgrep", "-P", str(s)], capture_output=True, text=True).stdout.split()
        ]
    return sup, kids


@contextlib.contextmanager
def shim_stack(tree, sim_port, proxy_port, workers=2, time_scale="20"):
    """sim replicas at sim_port, sim_port+1; shims at sim_port+2, +3; proxy over the shims."""
    procs = []
    tag = f"{os.path.basename(tree)}-{proxy_port}"
    try:
        procs.append(
            subprocess.Popen(
                [
                    "python3",
                    "-m",
                    "proxy",
                    "sim",
                    "--replicas",
                    "2",
                    "--base-port",
                    str(sim_port),
                    "--profile",
                    "tiny-cpu",
                    "--time-scale",
                    time_scale,
                ],
                cwd=tree,
                start_new_session=True,
                stdout=open(f"{LOG}/sim-{tag}.log", "w"),
                stderr=subprocess.STDOUT,
            )
        )
        for i in range(2):
            wait_http(f"http://127.0.0.1:{sim_port + i}/health")
            procs.append(
                subprocess.Popen(
                    [
                        "python3",
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim.py"),
                        str(sim_port + 2 + i),
                        f"http://127.0.0.1:{sim_port + i}",
                    ],
                    start_new_session=True,
                    stdout=open(f"{LOG}/shim-{tag}-{i}.log", "w"),
                    stderr=subprocess.STDOUT,
                )
            )
        for i in range(2):
            wait_http(f"http://127.0.0.1:{sim_port + 2 + i}/health")
        pargs = [
            "python3",
            "-m",
            "proxy",
            "serve",
            "--port",
            str(proxy_port),
            "--health-interval-s",
            "0.2",
            "--workers",
            str(workers),
            "--no-access-log",
        ]
        for i in range(2):
            pargs += ["--replica", f"http://127.0.0.1:{sim_port + 2 + i}"]
        procs.append(
            subprocess.Popen(
                pargs,
                cwd=tree,
                start_new_session=True,
                stdout=open(f"{LOG}/proxy-{tag}.log", "w"),
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
