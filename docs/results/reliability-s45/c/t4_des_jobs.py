# ruff: noqa
import os

os.makedirs("/tmp/saga-review45c", exist_ok=True)
# Item 4: bench des/grid with --jobs 2 finish and give the numbers of --jobs 1; no worker left; Ctrl-C to the group
# stops all within seconds with status 130 and no traceback.
import sys, os, json, subprocess, time, signal

SNAP = os.environ.get(
    "SAGA_TREE", os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../.."))
)
H = "/tmp/saga-review45c"


def run(args, out):
    p = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "bench", *args, "--json", out],
        cwd=SNAP,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return p.returncode, p.stderr


def strip(o):
    if isinstance(o, dict):
        return {
            k: strip(v)
            for k, v in o.items()
            if not any(
                w in k.lower()
                for w in (
                    "wall",
                    "elapsed",
                    "jobs",
                    "seconds_real",
                    "started",
                    "date",
                    "host",
                    "command",
                    "argv",
                    "json",
                )
            )
        }
    if isinstance(o, list):
        return [strip(v) for v in o]
    return o


def group_alive(pgid):
    out = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
    return out


problems = []
des = [
    "des",
    "--tasks",
    "20",
    "--replicas",
    "4",
    "--concurrency",
    "8",
    "--policies",
    "saga,round-robin,least-request",
]
grid = [
    "grid",
    "--workloads",
    "demo",
    "--loads",
    "0.5,0.9",
    "--oversub",
    "1.0",
    "--policies",
    "saga,round-robin",
    "--tasks",
    "10",
    "--calibration-steps",
    "0",
]
for name, args in (("des", des), ("grid", grid)):
    r1, e1 = run(args + ["--jobs", "1"], f"{H}/{name}1.json")
    r2, e2 = run(args + ["--jobs", "2"], f"{H}/{name}2.json")
    if r1 or r2:
        problems.append(f"{name}: rc {r1} {r2} {e2[-200:]!r}")
        continue
    a, b = strip(json.load(open(f"{H}/{name}1.json"))), strip(json.load(open(f"{H}/{name}2.json")))
    if a != b:
        ka = json.dumps(a, sort_keys=True)
        kb = json.dumps(b, sort_keys=True)
        i = next(i for i in range(min(len(ka), len(kb))) if ka[i] != kb[i])
        problems.append(
            f"{name}: --jobs 2 differs from --jobs 1 at ...{ka[max(0, i - 80) : i + 40]!r} vs {kb[max(0, i - 80) : i + 40]!r}"
        )
# Ctrl-C to the group, mid run
for attempt in range(2):
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "bench",
            "des",
            "--tasks",
            "400",
            "--replicas",
            "8",
            "--concurrency",
            "32",
            "--jobs",
            "2",
        ],
        cwd=SNAP,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    time.sleep(4 + attempt * 2)
    kids = group_alive(p.pid)
    os.killpg(p.pid, signal.SIGINT)
    t0 = time.time()
    try:
        err = p.communicate(timeout=15)[1]
        took = time.time() - t0
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        err = p.communicate()[1]
        took = None
    time.sleep(1)
    left = group_alive(p.pid)
    if left:
        time.sleep(4)
        left = [
            l
            + ":"
            + subprocess.run(
                ["ps", "-o", "etimes=,args=", "-p", l], capture_output=True, text=True
            ).stdout.strip()[:150]
            for l in group_alive(p.pid)
        ]
        for l in group_alive(p.pid):
            os.kill(int(l), signal.SIGKILL)
    if took is None or took > 5 or p.returncode != 130 or "Traceback" in err or left:
        problems.append(
            f"Ctrl-C try {attempt}: rc {p.returncode} after {took} s, {len(kids)} procs before, left 5 s later {left}, stderr {err[-300:]!r}"
        )
print(
    "DEFECT: " + " | ".join(problems)
    if problems
    else "OK: des and grid --jobs 2 equal --jobs 1 (wall-time fields aside); Ctrl-C to the group: rc 130 within 5 s, no traceback, no process left"
)
