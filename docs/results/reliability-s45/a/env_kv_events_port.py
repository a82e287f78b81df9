# ruff: noqa
"""SAGA_KV_EVENTS_PORT with bad values: refusal must name the variable (as every other SAGA_* number does)."""

import os
from pathlib import Path

import os, subprocess, sys

bad, good = [], []
for val in [" 5557 ", "nan", "0x10", ""]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")} | {"SAGA_KV_EVENTS_PORT": val}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--replica",
            "http://127.0.0.1:25998",
            "--port",
            "25403",
        ],
        cwd=os.environ.get("SAGA_TREE", str(Path(__file__).resolve().parents[4])),
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    errs = [l for l in p.stderr.splitlines() if l.startswith("saga: error:")]
    (good if p.returncode == 2 and errs and "SAGA_KV_EVENTS_PORT" in errs[0] else bad).append(
        f"{val!r}: rc {p.returncode} {errs[:1]}"
    )
print(f"DEFECT: SAGA_KV_EVENTS_PORT refusals do not name the variable: {bad}" if bad else f"OK: {good}")
