"""SAGA_LOG_FORMAT=json (set by the k8s Deployment and both compose files) still prints a plain-text
'SAGA proxy listening on ...' line into the same log stream."""

# ruff: noqa
import os as _os, pathlib as _pl

HERE = str(_pl.Path(__file__).resolve().parent)
TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44b", exist_ok=True)
import json, os, subprocess, sys, time, urllib.request

p = subprocess.Popen(
    [sys.executable, "-m", "proxy.cli", "serve", "--simulate", "1", "--port", "24072"],
    cwd=TREE,
    env={**os.environ, "SAGA_LOG_FORMAT": "json"},
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
)
try:
    for _ in range(100):
        try:
            if urllib.request.urlopen("http://127.0.0.1:24072/health", timeout=1).status == 200:
                break
        except Exception:
            pass
        time.sleep(0.2)
finally:
    p.terminate()
    out = p.communicate(timeout=30)[0]
bad = []
for line in out.splitlines():
    try:
        json.loads(line)
    except ValueError:
        bad.append(line)
print(f"{len(out.splitlines())} lines, {len(bad)} not JSON: {bad[:3]}")
print("DEFECT: non-JSON lines in a SAGA_LOG_FORMAT=json log" if bad else "OK: every line is JSON")
