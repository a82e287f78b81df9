# ruff: noqa
import os

os.makedirs("/tmp/saga-review45c", exist_ok=True)
# Item 4: after Ctrl-C to the group, does any DES worker keep running (SIGINT ignored) after saga bench exits?
import sys, os, subprocess, time, signal

SNAP = os.environ.get(
    "SAGA_TREE", os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../.."))
)


def group(pgid):
    return subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()


p = subprocess.Popen(
    [
        sys.executable,
        "-m",
        "proxy.cli",
        "bench",
        "des",
        "--tasks",
        "3000",
        "--replicas",
        "16",
        "--concurrency",
        "64",
        "--policies",
        "saga,round-robin",
        "--jobs",
        "2",
    ],
    cwd=SNAP,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
    start_new_session=True,
)
time.sleep(6)
before = group(p.pid)
os.killpg(p.pid, signal.SIGINT)
t0 = time.time()
err = p.communicate(timeout=30)[1]
exit_s = time.time() - t0
seen = {}
while time.time() - t0 < 30:
    left = group(p.pid)
    if not left:
        break
    for l in left:
        if l not in seen:
            seen[l] = subprocess.run(
                ["ps", "-o", "pcpu=,args=", "-p", l], capture_output=True, text=True
            ).stdout.strip()[:120]
    time.sleep(0.25)
gone_s = time.time() - t0
for l in group(p.pid):
    os.kill(int(l), signal.SIGKILL)
if gone_s > 3:
    print(
        f"DEFECT: Ctrl-C: saga bench exited rc {p.returncode} in {exit_s:.1f} s saying {err.strip()[-80:]!r}, but {len(seen)} of its processes ran on {gone_s:.1f} s more: {list(seen.values())[:2]}"
    )
else:
    print(f"OK: Ctrl-C: rc {p.returncode} in {exit_s:.1f} s, every process gone {gone_s:.1f} s after")
