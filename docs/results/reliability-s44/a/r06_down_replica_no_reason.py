"""A replica URL with a typo (nothing listening / a name that does not resolve / a server without /health) is
reported at start only as "replica URL is now down (breaker closed, probe ok: False)", also with -v; neither
the log nor GET /saga/v1/replicas says why (connection refused, DNS failure, HTTP 404). Ports 23014-23017."""

# ruff: noqa
import os as _os, pathlib as _pl

TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44a", exist_ok=True)
import json, os, sys, time

sys.path.insert(0, os.path.dirname(__file__))
from lib import *
from lib import _procs

bad = []
os.makedirs("/tmp/saga-review44a/empty", exist_ok=True)
web = subprocess.Popen(
    [
        sys.executable,
        "-m",
        "http.server",
        "23017",
        "--bind",
        "127.0.0.1",
        "--directory",
        "/tmp/saga-review44a/empty",
    ],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    start_new_session=True,
)
_procs.append(web)
wait_up(23017, "/")
for port, url in [
    (23014, "http://127.0.0.1:23998"),
    (23015, "http://nosuchhost.invalid:8000"),
    (23016, "http://127.0.0.1:23017"),
]:  # the last answers 404 to /health
    log = f"/tmp/saga-review44a/r06_{port}.log"
    p = start(["-v", "serve", "--replica", url, "--port", str(port)], wait_port=port, log=log)
    time.sleep(0.5)
    _, _, rep = http("GET", f"http://127.0.0.1:{port}/saga/v1/replicas")
    stop(p)
    lines = [l.strip() for l in open(log) if url in l and "listening" not in l and "SAGA proxy" not in l]
    print(url, "->", lines[:2])
    row = json.loads(rep)["replicas"][0]
    print(
        "   /saga/v1/replicas row:",
        {k: row[k] for k in row if k in ("healthy", "breaker", "reason", "error", "last_error")},
    )
    text = " ".join(lines).lower() + json.dumps(row).lower()
    if not any(w in text for w in ("refused", "resolve", "not known", "404", "name or service", "connect")):
        bad.append(url)
print(
    f"DEFECT: no reason given for a down replica: {bad}" if bad else "OK: each down replica's reason is given"
)
