# ruff: noqa
"""saga serve with odd SAGA_* values: each refusal must be exit 2, one 'saga: error:' line naming the variable,
no traceback; an acceptance must be what the user meant."""

import os
from pathlib import Path

import os, subprocess, sys, time

CASES = [
    ("SAGA_PORT", v)
    for v in ["nan", "inf", "1e400", " 25401 ", "25401\n", "+25401", "0x10", "٢٥٤٠١", "25_401", "", "9" * 30]
]
CASES += [
    ("SAGA_WORKERS", v) for v in ["nan", "inf", "1e400", " 2 ", "2\n", "+2", "0x2", "٢", "0_2", "", "1e3"]
]
CASES += [("SAGA_SEED", v) for v in ["nan", "inf", "1e400", " 5 ", "5\n", "0x10", "٥", "5_000", ""]]
CASES += [
    ("SAGA_SHUTDOWN_GRACE_S", "nan"),
    ("SAGA_HEALTH_TIMEOUT_S", "inf"),
    ("SAGA_TIME_SCALE", "nan"),
    ("SAGA_CONNECT_TIMEOUT_S", "-inf"),
    ("SAGA_KV_EVENTS_PORT", " 5 "),
    ("SAGA_KV_EVENTS_PORT", "nan"),
    ("SAGA_KV_EVENTS_PORT", "0x10"),
    ("SAGA_KV_EVENTS_PORT", ""),
]
bad, accepted = [], []
for var, val in CASES:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    env[var] = val
    args = [
        sys.executable,
        "-m",
        "proxy.cli",
        "serve",
        "--replica",
        "http://127.0.0.1:25998",
        "--no-access-log",
    ]
    if var != "SAGA_PORT":
        args += ["--port", "25402"]
    p = subprocess.Popen(
        args,
        cwd=os.environ.get("SAGA_TREE", str(Path(__file__).resolve().parents[4])),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
    )
    try:
        out, _ = p.communicate(timeout=6)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 15)
        try:
            out, _ = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            out, _ = p.communicate()
        line = [l for l in out.splitlines() if "listening on" in l]
        accepted.append(
            f"{var}={val!r}: {line[0][line[0].find('http') : line[0].find(' (')] if line else 'running'}"
        )
        continue
    errs = [l for l in out.splitlines() if l.startswith("saga: error:")]
    if p.returncode != 2 or len(errs) != 1 or var not in errs[0] or "Traceback" in out:
        bad.append(f"{var}={val!r}: rc {p.returncode}, {errs[:1] or out.strip().splitlines()[-1:]}")
if bad:
    print(
        f"DEFECT: {len(bad)}/{len(CASES)} refusals do not name the variable (or wrong rc/lines): {bad}; accepted: {accepted}"
    )
else:
    print(f"OK: all refusals are one saga: error line naming the variable with rc 2; accepted: {accepted}")
