# ruff: noqa
"""`saga bench des --concurrency N --arrival-rate R`: both accepted (no error), but the tasks are stamped
with Poisson arrival times and the cluster starts a task with arrival_s at its arrival whatever
`concurrency` says, so --concurrency is silently ignored (ClusterConfig.validate refuses the pair only when
arrival_rate is in the config, which the CLI never puts there)."""

import json, os, subprocess, sys, tempfile

d = tempfile.mkdtemp(prefix="saga-s43-")
ROOT = os.environ.get(
    "SAGA_ROOT", os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
)


def run(extra, name):
    out = os.path.join(d, name)
    cmd = [
        sys.executable,
        "-m",
        "proxy.cli",
        "bench",
        "des",
        "--workload",
        "swe",
        "--tasks",
        "8",
        "--replicas",
        "1",
        "--policies",
        "session-affinity",
        "--arrival-rate",
        "5",
        "--kv-scale",
        "0.5",
        "--json",
        out,
        *extra,
    ]
    p = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True)
    return p.returncode, json.load(open(out))["policies"]["session-affinity"] if p.returncode in (
        0,
        1,
    ) and os.path.exists(out) else p.stderr[-500:]


rc1, a = run(["--concurrency", "1"], "c1.json")
rc2, b = run([], "open.json")
if isinstance(a, str) or isinstance(b, str):
    print(f"OK: the pair is refused or fails (rc {rc1}): {a if isinstance(a, str) else ''}"[:300])
elif a["tct_mean_s"] == b["tct_mean_s"] and a["makespan_s"] == b["makespan_s"]:
    print(
        f"DEFECT: --concurrency 1 with --arrival-rate accepted and silently ignored (TCT mean {a['tct_mean_s']:.1f} s both ways, rc {rc1})"
    )
else:
    print(f"OK: --concurrency changes the run ({a['tct_mean_s']:.1f} vs {b['tct_mean_s']:.1f} s)")
