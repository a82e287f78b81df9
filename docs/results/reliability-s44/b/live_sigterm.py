"""`saga bench live` stopped by SIGTERM (what `timeout`, CI runners and `kill` send) while a peer router runs:
is the router process it started left behind (holding its port)?"""

# ruff: noqa
import os as _os, pathlib as _pl

HERE = str(_pl.Path(__file__).resolve().parent)
TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44b", exist_ok=True)
import os, signal, subprocess, sys, time


def routers():
    out = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
    return [
        l.strip() for l in out.splitlines() if "grep" not in l and ("vllm::router" in l or "vllm_router" in l)
    ]


before = set(routers())
bench = subprocess.Popen(
    [
        sys.executable,
        "-m",
        "proxy.cli",
        "bench",
        "live",
        "--routers",
        "vllm-router:round_robin",
        "--workload",
        "webarena",
        "--tasks",
        "40",
        "--replicas",
        "2",
        "--time-scale",
        "2",
    ],
    cwd=TREE,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
for _ in range(60):
    time.sleep(0.5)
    if set(routers()) - before:
        break
time.sleep(2)
print("router running under bench:", [r[:120] for r in set(routers()) - before])
bench.send_signal(signal.SIGTERM)
bench.wait(20)
time.sleep(2)
orphans = [l for l in set(routers()) - before if "defunct" not in l]
print("2 s after SIGTERM:", orphans)
time.sleep(28)
left = [l for l in set(routers()) - before if "defunct" not in l]
if left:
    print(
        "DEFECT: after SIGTERM to saga bench live (rc %s) its router is still running 30 s later:"
        % bench.returncode,
        [l[:160] for l in left],
    )
    for l in left:
        os.kill(int(l.split()[0]), signal.SIGKILL)
else:
    print("OK: no router left behind")
