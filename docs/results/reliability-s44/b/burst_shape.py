"""docs/loadtesting.md, --shape burst: 'The chosen user classes run -u/2 users throughout; in the middle third of
the run BurstTenantAgent users (tenant burst) join up to -u, then leave.' Checks the class counts Locust spawns,
(a) with the default classes, (b) with a class named on the command line, as the locustfile's own docstring shows
(`locust -f loadtests/locustfile.py SweAgent --tenant-mix tiers --shape burst ...`)."""

# ruff: noqa
import os as _os, pathlib as _pl

HERE = str(_pl.Path(__file__).resolve().parent)
TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44b", exist_ok=True)
import json, re, subprocess, sys, time

SNAP, PORT = TREE, 24063
srv = subprocess.Popen([sys.executable, HERE + "/fake_upstream.py", str(PORT), "0.05"])
defects = []


def run(classes):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            "loadtests/locustfile.py",
            *classes,
            "--headless",
            "-u",
            "8",
            "-r",
            "8",
            "-t",
            "12s",
            "--shape",
            "burst",
            "--host",
            f"http://127.0.0.1:{PORT}",
            "--no-stream",
            "--time-scale",
            "20",
            "--stop-timeout",
            "0",
            "--only-summary",
        ],
        cwd=SNAP,
        capture_output=True,
        text=True,
        timeout=90,
    )
    return [json.loads(m) for m in re.findall(r"All users spawned: (\{.*?\})", out.stderr + out.stdout)]


try:
    time.sleep(2)
    a = run([])
    print("default classes:", a)
    mid = max(a, key=lambda d: sum(d.values()))
    background = sum(v for k, v in mid.items() if k != "BurstTenantAgent")
    if background != 4 or mid.get("BurstTenantAgent", 0) != 4:
        defects.append(
            f"middle third runs {background} background users (want -u/2 = 4) and "
            f"{mid.get('BurstTenantAgent', 0)} BurstTenantAgent (want 4): {mid}"
        )
    b = run(["SweAgent"])
    print("SweAgent named:", b)
    if not any("BurstTenantAgent" in d and d["BurstTenantAgent"] > 0 for d in b):
        defects.append(
            f"with `SweAgent --shape burst` no burst tenant ever runs; SweAgent itself grows instead: {b}"
        )
finally:
    srv.kill()
    srv.wait()
for d in defects:
    print("DEFECT:", d)
if not defects:
    print("OK: burst shape as documented")
