# ruff: noqa
"""saga bench grid / des --jobs 2, interrupted once its pool's workers run: SIGINT to the group (Ctrl-C) or
SIGTERM to the main process. Must exit 130 within ~2 s and leave no process of its session behind."""

import os
from pathlib import Path

os.makedirs("/tmp/saga-review45a", exist_ok=True)

import os, signal, subprocess, sys, time

RUNS = [
    ("grid", ["bench", "grid", "--workloads", "swe", "--tasks", "24", "--jobs", "2"]),
    ("des", ["bench", "des", "--workload", "swe", "--tasks", "60", "--jobs", "2"]),
]


def session_procs(sid):
    out = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True).stdout
    return [l.strip() for l in out.splitlines() if l.split()[1] == str(sid)]


bad, ok = [], []
for name, argv in RUNS:
    for how in ("SIGINT-group", "SIGTERM-main"):
        p = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", *argv],
            cwd="/tmp/saga-review45a",
            env={
                **os.environ,
                "PYTHONPATH": os.environ.get("SAGA_TREE", str(Path(__file__).resolve().parents[4])),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            text=True,
        )
        t0 = time.time()
        workers = []
        while time.time() - t0 < 90 and p.poll() is None:
            workers = [
                l for l in session_procs(p.pid) if "multiprocessing" in l and "resource_tracker" not in l
            ]
            if len(workers) >= 2:
                break
            time.sleep(0.2)
        time.sleep(1.5)
        if p.poll() is not None:
            bad.append(f"{name}/{how}: finished before interrupt (rc {p.returncode})")
            continue
        ts = time.time()
        if how == "SIGINT-group":
            os.killpg(p.pid, signal.SIGINT)
        else:
            os.kill(p.pid, signal.SIGTERM)
        try:
            p.wait(15)
            took = time.time() - ts
        except subprocess.TimeoutExpired:
            took = None
        time.sleep(2.0)
        left = session_procs(p.pid)
        err = p.stderr.read() if took is not None else ""
        open(f"/tmp/saga-review45a/bench_{name}_{how}.err", "w").write(err)
        if took is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        else:
            for l in left:
                try:
                    os.kill(int(l.split()[0]), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        res = f"{name}/{how}: workers seen {len(workers)}, rc {p.returncode}, stopped in {took if took is None else round(took, 2)} s, left {len(left)}"
        if took is None or took > 3 or p.returncode != 130 or left:  # (tracebacks: bench_des_sigint_tb10.py)
            bad.append(res + (f" {left[:2]}" if left else "") + (" TRACEBACK" if "Traceback" in err else ""))
        else:
            ok.append(res)
if bad:
    print(f"DEFECT: bench interrupt: {bad}; ok: {ok}")
else:
    print(f"OK: bench interrupt: {ok}")
