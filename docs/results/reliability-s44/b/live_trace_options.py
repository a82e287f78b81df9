"""`saga bench live --trace F --concurrency 1 --tenants ... --workload ...`: the closed-loop limit and the workload
options are taken without a word and ignored (check_load_options refuses only --arrival-rate beside --trace)."""

# ruff: noqa
import os as _os, pathlib as _pl

HERE = str(_pl.Path(__file__).resolve().parent)
TREE = _os.environ.get("SAGA_TREE") or str(_pl.Path(__file__).resolve().parents[4])
_os.makedirs("/tmp/saga-review44b", exist_ok=True)
import json, subprocess, sys

out = "/tmp/saga-review44b/live_trace_opts.json"
r = subprocess.run(
    [
        sys.executable,
        "-m",
        "proxy.cli",
        "bench",
        "live",
        "--routers",
        "saga:session-affinity",
        "--trace",
        HERE + "/trace6.csv",
        "--concurrency",
        "1",
        "--tenants",
        "gold:1:interactive",
        "--workload",
        "webarena",
        "--replicas",
        "1",
        "--time-scale",
        "20",
        "--json",
        out,
    ],
    cwd=TREE,
    capture_output=True,
    text=True,
    timeout=150,
)
print(
    "exit status",
    r.returncode,
    "| stderr/errors:",
    [l for l in (r.stdout + r.stderr).splitlines() if "error" in l.lower()][:3],
)
p = json.load(open(out))["policies"]["saga:session-affinity"]
print(f"tasks {p['tasks']}, TCT mean {p['tct_mean_s']:.2f} s, makespan {p['makespan_s']:.2f} s")
if r.returncode == 0 and p["makespan_s"] < 2 * p["tct_mean_s"]:
    print(
        f"DEFECT: --concurrency 1 accepted beside --trace but ignored: {p['tasks']} tasks of {p['tct_mean_s']:.2f} s "
        f"each finished in a makespan of {p['makespan_s']:.2f} s (one at a time would need >= {p['tasks'] * p['tct_mean_s']:.1f} s); "
        "--tenants/--workload were ignored too"
    )
else:
    print("OK: refused or honoured")
