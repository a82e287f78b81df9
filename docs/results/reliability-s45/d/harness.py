# ruff: noqa
"""Start `saga serve --simulate 2` (optionally --workers 2), drive a few calls, scrape /metrics and admin routes.
Usage: harness.py PORT WORKERS OUTPREFIX"""

import json, os, signal, subprocess, sys, time, urllib.request, urllib.error

port, workers, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cfg = out + "-cfg.yaml"
open(cfg, "w").write("""tenants:
  slo_classes:
    interactive: {tct_factor: 1.5, ttft_s: 0.000001}
    standard: {tct_factor: 3.0}
    batch: {}
  tenants:
    web-agents: {weight: 2, slo_class: interactive}
  default: {weight: 1, slo_class: standard}
""")
args = [
    sys.executable,
    "-m",
    "proxy.cli",
    "serve",
    "--simulate",
    "2",
    "--port",
    str(port),
    "--config",
    cfg,
    "--time-scale",
    "50",
]
if workers > 1:
    args += ["--workers", str(workers)]
args += os.environ.get("EXTRA", "").split()
p = subprocess.Popen(
    args,
    cwd="/tmp/snap45b",
    stdout=open(out + "-log.txt", "w"),
    stderr=subprocess.STDOUT,
    start_new_session=True,
)
base = f"http://127.0.0.1:{port}"


def req(method, path, body=None, headers=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    r = urllib.request.Request(
        base + path, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


try:
    for _ in range(120):
        try:
            if req("GET", "/health")[0] in (200, 503):
                break
        except Exception:
            time.sleep(0.25)
    time.sleep(1.0)
    res = {}
    msg = lambda s: {"model": "saga-sim", "messages": [{"role": "user", "content": s}], "max_tokens": 8}
    for i in range(3):
        for tenant in ("web-agents", "other"):
            h = {"X-Session-ID": f"t-{tenant}-{i}", "X-Tenant-ID": tenant}
            res[f"whole-{tenant}-{i}"] = req("POST", "/v1/chat/completions", msg("hello " * 20), h)[0]
            res[f"stream-{tenant}-{i}"] = req(
                "POST",
                "/v1/chat/completions",
                {**msg("hi again " * 20), "stream": True},
                {**h, "X-Session-End": "true"},
            )[0]
    res["bad-json"] = req("POST", "/v1/chat/completions", raw=b"{not json", headers={"X-Session-ID": "bad"})[
        0
    ]
    res["404"] = req("GET", "/nope")[0]
    res["completions"] = req(
        "POST", "/v1/completions", {"model": "saga-sim", "prompt": "x", "max_tokens": 4}
    )[0]
    time.sleep(0.5)
    for path, name in [
        ("/metrics", "metrics"),
        ("/health", "health"),
        ("/saga/v1/replicas", "replicas"),
        ("/saga/v1/sessions", "sessions"),
        ("/saga/v1/queue", "queue"),
        ("/saga/v1/state", "state"),
        ("/v1/models", "models"),
    ]:
        st, hd, body = req("GET", path)
        open(f"{out}-{name}.txt", "wb").write(body)
        res[f"GET {path}"] = (st, hd.get("Content-Type"))
    reps = json.loads(open(f"{out}-replicas.txt").read())["replicas"]
    for i, r in enumerate(reps):
        try:
            open(f"{out}-replica{i}-metrics.txt", "wb").write(
                urllib.request.urlopen(r["replica_id"] + "/metrics", timeout=10).read()
            )
        except Exception as e:
            res[f"replica{i}"] = repr(e)
    json.dump(res, open(out + "-results.json", "w"), indent=1)
    print(json.dumps(res))
finally:
    os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
