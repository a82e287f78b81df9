# ruff: noqa
"""Proxy in front of a fake replica that answers 500 (or a too-large body, with --max-answer-bytes 1000), and one
in front of a dead port; send a few calls; save /metrics. Usage: fail_harness.py OUTPREFIX"""

import json, os, signal, subprocess, sys, time, urllib.request, urllib.error

out = sys.argv[1]
procs = []


def start(args, cwd="/tmp/snap45b", log=None):
    p = subprocess.Popen(
        args, cwd=cwd, stdout=open(log or os.devnull, "w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    procs.append(p)
    return p


def req(base, body, raw=None, headers=None):
    r = urllib.request.Request(
        base + "/v1/chat/completions",
        data=raw or json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def wait(base):
    for _ in range(80):
        try:
            urllib.request.urlopen(base + "/health", timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except Exception:
            time.sleep(0.25)


body = {"model": "saga-sim", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
res = {}
try:
    start([sys.executable, "/tmp/review45d/fake_replica.py", "28201", "err500"], cwd="/tmp/review45d")
    start([sys.executable, "/tmp/review45d/fake_replica.py", "28202", "big"], cwd="/tmp/review45d")
    time.sleep(1)
    scen = {
        "err500": ["--replica", "http://127.0.0.1:28201"],
        "big": ["--replica", "http://127.0.0.1:28202", "--max-answer-bytes", "1000"],
        "dead": ["--replica", "http://127.0.0.1:28299"],
    }
    for i, (name, extra) in enumerate(scen.items()):
        port = 28211 + i
        base = f"http://127.0.0.1:{port}"
        p = start(
            [sys.executable, "-m", "proxy.cli", "serve", "--port", str(port), "--max-retries", "0"] + extra,
            log=f"{out}-{name}-log.txt",
        )
        wait(base)
        time.sleep(2.5)
        res[name] = [req(base, body, headers={"X-Session-ID": f"s{j}"}) for j in range(4)]
        m = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
        open(f"{out}-{name}-metrics.txt", "w").write(m)
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(20)
    print(json.dumps(res))
finally:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(10)
        except Exception:
            pass
