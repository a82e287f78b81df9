"""docs/loadtesting.md: "A bad mix stops Locust at start naming the item." A malformed weight stops it with a
Python traceback ("Uncaught exception in event handler"), and a misspelt preset (`two-tenant` for
`two-tenants`) or an unknown SLO class (`a:1:gold`) is accepted silently (exit 0; the preset name becomes a
tenant). Ports 23114 (sim), 23018 (proxy)."""

# ruff: noqa
import os as _os, pathlib as _pl

TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44a", exist_ok=True)
import os, subprocess, sys

sys.path.insert(0, os.path.dirname(__file__))
from lib import *

start(["sim", "--replicas", "1", "--base-port", "23114", "--time-scale", "20"], wait_port=23114)
start(
    ["serve", "--replica", "http://127.0.0.1:23114", "--port", "23018", "--time-scale", "20"], wait_port=23018
)
bad = []
for mix in ["a:x", "two-tenant", "a:1:gold"]:
    p = subprocess.run(
        [
            "locust",
            "-f",
            f"{SNAP}/loadtests/locustfile.py",
            "--headless",
            "-u",
            "1",
            "-r",
            "1",
            "-t",
            "2s",
            "--stop-timeout",
            "0",
            "--time-scale",
            "20",
            "--host",
            "http://127.0.0.1:23018",
            "--tenant-mix",
            mix,
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/tmp/saga-review44a",
    )
    out = p.stdout + p.stderr
    rows = sorted({l.split()[1] for l in out.splitlines() if l.startswith(("chat ", "ttft "))})
    tb = "Traceback" in out
    print(f"--tenant-mix {mix!r}: exit {p.returncode}, traceback {tb}, rows {rows}")
    if tb or p.returncode == 0:
        bad.append(mix)
print(
    f"DEFECT: bad tenant mixes not refused cleanly: {bad}"
    if bad
    else "OK: every bad mix is refused with a clean message"
)
