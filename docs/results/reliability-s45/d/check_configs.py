# ruff: noqa
"""Each SAGA YAML config shipped (saga-default, compose saga-cpu/gpu, k8s ConfigMap's saga.yaml) loads with the
proxy's own loader: `serve --config FILE --replica http://127.0.0.1:9 --host 127.0.0.1 --port P` with the
manifests' env (SAGA_LOG_FORMAT=json) reaches listening; its log is JSON; /health answers (Dockerfile
HEALTHCHECK, k8s readinessProbe); `saga sim --replicas 1 --host .. --base-port P` (compose/overlay args) serves /health."""

import json, os, signal, subprocess, sys, time, urllib.request, urllib.error, yaml

S = "/tmp/snap45b"
R = "/tmp/review45d"
cm = yaml.safe_load(open(S + "/deploy/k8s/base/saga-configmap.yaml"))["data"]["saga.yaml"]
open(R + "/cm-saga.yaml", "w").write(cm)
files = [
    S + "/deploy/saga-default.yaml",
    S + "/deploy/compose/saga-cpu.yaml",
    S + "/deploy/compose/saga-gpu.yaml",
    R + "/cm-saga.yaml",
]
probs, oks = [], []


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception:
        return None


for i, f in enumerate(files):
    port = 28301 + i
    log = f"{R}/cfg-{i}.log"
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--config",
            f,
            "--replica",
            "http://127.0.0.1:9",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=S,
        env={**os.environ, "SAGA_LOG_FORMAT": "json"},
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    st = None
    for _ in range(60):
        st = get(f"http://127.0.0.1:{port}/health")
        if st or p.poll() is not None:
            break
        time.sleep(0.25)
    os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    lines = [l for l in open(log).read().splitlines() if l.strip()]
    nonjson = [l for l in lines if not l.startswith("{")]
    name = os.path.basename(f)
    if st is None:
        probs.append(f"{name}: did not listen: {lines[-3:]}")
    else:
        oks.append(f"{name}: listens, /health {st}")
    if nonjson:
        probs.append(f"{name}: SAGA_LOG_FORMAT=json but non-JSON log lines: {nonjson[:2]}")
# saga sim as compose/overlay run it (host 127.0.0.1 instead of 0.0.0.0)
p = subprocess.Popen(
    [
        sys.executable,
        "-m",
        "proxy.cli",
        "sim",
        "--replicas",
        "1",
        "--host",
        "127.0.0.1",
        "--base-port",
        "28310",
    ],
    cwd=S,
    stdout=open(R + "/sim.log", "w"),
    stderr=subprocess.STDOUT,
    start_new_session=True,
)
st = None
for _ in range(60):
    st = get("http://127.0.0.1:28310/health")
    if st or p.poll() is not None:
        break
    time.sleep(0.25)
os.killpg(p.pid, signal.SIGTERM)
p.wait(15)
if st != 200:
    probs.append(f"saga sim --base-port: /health -> {st}")
else:
    oks.append("saga sim /health 200")
print(("DEFECT: " + " | ".join(probs)) if probs else "OK: " + "; ".join(oks))
