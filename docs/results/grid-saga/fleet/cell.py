"""One steady-state cell of docs/results/saga.md "Where the 1.64x can be tested in a steady state" (h-fleet).

Runs each policy once in the discrete-event cluster (loadtests.bench.grid_runs.run_one, as `saga bench grid`
does) on the first --tasks tasks of a seeded workload, open loop at --rate tasks/s, at --kv-tokens KV per
replica (or --kv-scale), and appends one JSON line to --out with, per policy: TCT geomean on the tasks every
policy finished, speedup over session-affinity, the isolated-time bound and headroom, measured KV
oversubscription, and three steadiness figures:
- offered_per_s = tasks / last arrival; completed_per_s = finished / makespan (the grid's throughput);
- window_ratio = tasks finished by the last arrival / tasks arrived by then (1.0 when a policy keeps up,
  up to the tasks still running; a growing backlog drives it down); iso_window_ratio is the same with every
  task taking its isolated time, the most any policy can reach;
- second_half_ratio = tasks finished in the second half of the arrival window (last arrival / 2 to the last
  arrival) over tasks arrived in it: the completed over the offered rate once the run is warm (about 1 in a
  steady state; the brief's ">= ~95% of the offered rate");
- late_over_early = TCT geomean of the last quarter of arrivals over the first quarter (>1 when the backlog
  grows during the run).
The workload generators and the Poisson arrivals are prefix-stable, so a run with 2x the tasks repeats this
run's arrivals and adds as many after them: the 2x-longer check.
Run from the repository root (it imports the tree it sits in):
python3 docs/results/grid-saga/fleet/cell.py --workload swe --tasks 160 ...
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

# Import this worktree's modules (and their compiled builds), not whatever `saga` is installed from: run as a
# script, Python puts only the script's folder on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

from loadtests.bench.grid_runs import REFERENCE, peak_context_tokens, run_one
from loadtests.bench.isolated import isolated_task_time_s
from loadtests.bench.metrics import geomean
from loadtests.workloads.catalog import generate, with_poisson_arrivals
from simulator.cost_model import get_profile


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--workload", required=True)
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--profile", default="llama3-70b-tp4-a100")
    p.add_argument("--replicas", type=int, default=16)
    p.add_argument("--rate", type=float, required=True, help="offered tasks per second (Poisson)")
    kv = p.add_mutually_exclusive_group()
    kv.add_argument("--kv-tokens", type=int, help="KV tokens per replica")
    kv.add_argument("--kv-scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policies", default="session-affinity,saga")
    p.add_argument("--label", default="")
    p.add_argument(
        "--no-reference", action="store_true",
        help="run only --policies (for a capacity bisection: no speedup or bound, and no slow SA collapse)",
    )  # fmt: skip
    p.add_argument("--out", required=True)
    a = p.parse_args()
    prof = get_profile(a.profile)
    scale = a.kv_tokens / prof.kv_capacity_tokens if a.kv_tokens else a.kv_scale
    tasks = generate(a.workload, a.tasks, seed=a.seed)
    isolated = {t.session_id: isolated_task_time_s(t, prof) for t in tasks}
    arrivals = {t.session_id: t.arrival_s or 0.0 for t in with_poisson_arrivals(tasks, a.rate, seed=a.seed)}
    last = max(arrivals.values())
    order = sorted(arrivals, key=lambda s: arrivals[s])
    quarter = max(1, len(order) // 4)
    policies = [x for x in a.policies.split(",") if x]
    if REFERENCE not in policies and not a.no_reference:
        policies.insert(0, REFERENCE)
    started = time.perf_counter()
    runs = {}
    for pol in policies:
        runs[pol] = run_one(
            pol, tasks, rate=a.rate, kv_scale=scale, replicas=a.replicas, profile=a.profile,
            seed=a.seed, isolated=isolated,
        )  # fmt: skip
    common = sorted(set.intersection(*(set(r.finished) for r in runs.values())))
    geo = {pol: geomean([r.finished[s] for s in common]) for pol, r in runs.items()}
    iso = geomean([isolated[s] for s in common])
    ref = geo.get(REFERENCE)
    out: dict[str, object] = {}
    for pol, r in runs.items():
        m = r.metrics
        done_by_last = sum(1 for s, tct in r.finished.items() if arrivals[s] + tct <= last)
        arrived = len(tasks)
        running_at_end = sum(1 for s, tct in r.finished.items() if arrivals[s] <= last < arrivals[s] + tct)
        half = last / 2
        ends = [arrivals[s] + tct for s, tct in r.finished.items()]
        came = sum(1 for t in arrivals.values() if half < t <= last)
        went = sum(1 for e in ends if half < e <= last)
        early = [r.finished[s] for s in order[:quarter] if s in r.finished]
        late = [r.finished[s] for s in order[-quarter:] if s in r.finished]
        out[pol] = {
            "tct_geomean_s": geo[pol],
            "speedup_vs_sa": ref / geo[pol] if ref else None,
            "finished": len(r.finished),
            "completed_per_s": m.throughput_tasks_per_s,
            "makespan_s": m.makespan_s,
            "window_ratio": done_by_last / arrived,
            "second_half_ratio": went / came if came else None,
            "running_at_last_arrival": running_at_end,
            "late_over_early": geomean(late) / geomean(early) if early and late else None,
            "oversub_mean": m.kv.oversubscription_mean if m.kv is not None else None,
            "preemptions": m.preemptions,
            "wall_s": r.wall_s,
        }
    rec = {
        "label": a.label,
        "workload": a.workload, "tasks": a.tasks, "profile": a.profile, "replicas": a.replicas,
        "seed": a.seed, "rate": a.rate, "kv_tokens": int(prof.kv_capacity_tokens * scale) // 16 * 16,
        "kv_scale": scale, "offered_per_s": len(tasks) / last, "last_arrival_s": last,
        "longest_context": max(peak_context_tokens(t) for t in tasks),
        "isolated_geomean_s": iso,
        "iso_window_ratio": sum(1 for s in arrivals if arrivals[s] + isolated[s] <= last) / len(tasks),
        "bound": ref / iso if ref else None, "compared": len(common),
        "policies": out, "wall_s": time.perf_counter() - started,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python3", *sys.argv]),
    }  # fmt: skip
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    line = f"{a.label} {a.workload} s={a.seed} n={a.tasks} kv={rec['kv_tokens']} rate={a.rate:.4g}"
    if ref:
        sa = out[REFERENCE]
        assert isinstance(sa, dict)
        line += (
            f" bound={rec['bound']:.2f} iso win={rec['iso_window_ratio']:.2f} SA win={sa['window_ratio']:.2f}"
            f" ov={sa['oversub_mean']:.2f}"
        )
    for pol, v in out.items():
        assert isinstance(v, dict)
        line += f" | {pol} {v['tct_geomean_s']:.0f}s"
        line += f" {v['speedup_vs_sa']:.2f}x" if v["speedup_vs_sa"] else ""
        line += f" half={v['second_half_ratio']:.2f} l/e={v['late_over_early']:.2f}"
    print(line + f" [{rec['wall_s']:.0f}s]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
