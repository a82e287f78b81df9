# ruff: noqa
"""saga serve --workers 2 --host ::1 on a port in use: the error should name the address as [::1]:PORT
(base_url brackets IPv6 everywhere else); '::1:25350' reads as host '::1:25350' or port 1."""

import os
from pathlib import Path

import socket, subprocess, sys

s = socket.socket(socket.AF_INET6)
s.bind(("::1", 25350))
s.listen()
out = {}
for extra in (["--workers", "2"], []):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--replica",
            "http://127.0.0.1:25998",
            "--host",
            "::1",
            "--port",
            "25350",
            *extra,
        ],
        cwd=os.environ.get("SAGA_TREE", str(Path(__file__).resolve().parents[4])),
        capture_output=True,
        text=True,
        timeout=30,
    )
    out[" ".join(extra) or "single"] = [l for l in p.stderr.splitlines() if l.startswith("saga: error")][:1]
s.close()
w = out["--workers 2"]
if w and "::1:25350" in w[0] and "[::1]:25350" not in w[0]:
    print(
        f"DEFECT: the --workers refusal names an IPv6 address without brackets: {w}; single-process says {out['single']}"
    )
else:
    print(f"OK: IPv6 refusal lines: {out}")
