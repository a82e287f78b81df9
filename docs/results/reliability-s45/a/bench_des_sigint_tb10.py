# ruff: noqa
"""saga bench des --jobs 2, Ctrl-C (SIGINT to the group) once its workers run, 4 times: stderr must hold no
traceback (only 'saga bench: stopped (SIGINT)...')."""

import os
from pathlib import Path

os.makedirs("/tmp/saga-review45a", exist_ok=True)

import os, signal, subprocess, sys, time


def session_procs(sid):
    out = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True).stdout
    return [l.strip() for l in out.splitlines() if l.split()[1] == str(sid)]


tbs, summary = [], []
for i in range(10):
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "bench",
            "des",
            "--workload",
            "swe",
            "--tasks",
            "60",
            "--jobs",
            "2",
        ],
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
    while time.time() - t0 < 90 and p.poll() is None:
        if (
            len([l for l in session_procs(p.pid) if "multiprocessing" in l and "resource_tracker" not in l])
            >= 2
        ):
            break
        time.sleep(0.2)
    time.sleep(0.1 * (i % 5))
    os.killpg(p.pid, signal.SIGINT)
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        p.wait()
    err = p.stderr.read()
    time.sleep(1)
    for l in session_procs(p.pid):
        os.kill(int(l.split()[0]), 9)
    summary.append(p.returncode)
    if "Traceback" in err:
        tbs.append(err)
        open(f"/tmp/saga-review45a/des_tb_{i}.err", "w").write(err)
if tbs:
    lines = [l for l in tbs[0].splitlines() if l.strip()]
    print(
        f"DEFECT: Ctrl-C of bench des --jobs 2 printed a traceback in {len(tbs)}/10 runs (rc {summary}); last lines: {lines[-3:]}"
    )
else:
    print(f"OK: no traceback in 10 Ctrl-C runs of bench des --jobs 2 (rc {summary})")
