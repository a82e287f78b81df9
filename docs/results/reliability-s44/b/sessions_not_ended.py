"""The locustfile never ends its sessions (no `X-Session-End: true` on a task's last call, no
POST /saga/v1/sessions/{id}/end, also not for a user stopped mid-task): every finished or abandoned task stays a
live session on the proxy for session_idle_ttl_s (1 h), and the proxy's task-completion histogram (the Grafana
'Task completion time' panel, deploy/grafana/saga-dashboard.json) stays empty under the documented load test."""

# ruff: noqa
import os as _os, pathlib as _pl

HERE = str(_pl.Path(__file__).resolve().parent)
TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44b", exist_ok=True)
import csv, json, re, subprocess, sys, time, urllib.request

SNAP, PORT = TREE, 24071
proxy = subprocess.Popen(
    [
        sys.executable,
        "-m",
        "proxy.cli",
        "serve",
        "--simulate",
        "2",
        "--time-scale",
        "20",
        "--port",
        str(PORT),
        "--no-access-log",
    ],
    cwd=SNAP,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
base = f"http://127.0.0.1:{PORT}"
try:
    for _ in range(100):
        try:
            if urllib.request.urlopen(base + "/health", timeout=1).status == 200:
                break
        except Exception:
            pass
        time.sleep(0.2)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            "loadtests/locustfile.py",
            "WebArenaAgent",
            "--headless",
            "-u",
            "3",
            "-r",
            "3",
            "-t",
            "15s",
            "--host",
            base,
            "--time-scale",
            "20",
            "--stop-timeout",
            "0",
            "--csv",
            "/tmp/saga-review44b/sess",
            "--only-summary",
        ],
        cwd=SNAP,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )
    row = next(
        r for r in csv.DictReader(open("/tmp/saga-review44b/sess_stats.csv")) if r["Type"] == "agent_task"
    )
    sessions = json.load(urllib.request.urlopen(base + "/saga/v1/sessions?limit=1000"))
    metrics = urllib.request.urlopen(base + "/metrics").read().decode()
    tct = float(re.search(r"^saga_task_completion_seconds_count (\S+)", metrics, re.M).group(1))
    print(
        f"Locust finished {row['Request Count']} agent tasks (3 users stopped mid-task); proxy: {sessions['total']} "
        f"live sessions, saga_task_completion_seconds_count {tct:.0f}"
    )
    if sessions["total"] > 0 and tct == 0:
        print(
            f"DEFECT: {sessions['total']} sessions of finished/abandoned Locust tasks stay open on the proxy and "
            "saga_task_completion_seconds records none of them"
        )
    else:
        print("OK: the load generator ends its sessions")
finally:
    proxy.kill()
    proxy.wait()
