"""docs/loadtesting.md: '--request-timeout | 600 | seconds per LLM call'. With streaming (the default) it is
requests' per-read timeout, so a call that streams for longer than the limit never fails."""

# ruff: noqa
import os as _os, pathlib as _pl

HERE = str(_pl.Path(__file__).resolve().parent)
TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44b", exist_ok=True)
import csv, subprocess, sys, time, urllib.request

SNAP = TREE
procs = [
    subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "serve", "--simulate", "1", "--port", "24070", "--no-access-log"],
        cwd=SNAP,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
]
try:
    for _ in range(100):
        try:
            if urllib.request.urlopen("http://127.0.0.1:24070/health", timeout=1).status == 200:
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
            "SweAgent",
            "--headless",
            "-u",
            "2",
            "-r",
            "2",
            "-t",
            "15s",
            "--host",
            "http://127.0.0.1:24070",
            "--request-timeout",
            "0.5",
            "--stop-timeout",
            "0",
            "--csv",
            "/tmp/saga-review44b/rt",
            "--only-summary",
        ],
        cwd=SNAP,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )
    row = next(r for r in csv.DictReader(open("/tmp/saga-review44b/rt_stats.csv")) if r["Type"] == "chat")
    n, f, mx = int(row["Request Count"]), int(row["Failure Count"]), float(row["Max Response Time"])
    slow = sum(1 for _ in [0])  # placeholder
    print(f"chat: {n} calls, {f} failed, max latency {mx:.0f} ms, median {row['Median Response Time']} ms")
    if mx > 500 * 1.5 and f == 0:
        print(f"DEFECT: --request-timeout 0.5 but calls took up to {mx:.0f} ms and none failed")
    else:
        print("OK: calls over the limit fail")
finally:
    for p in procs:
        p.kill()
        p.wait()
