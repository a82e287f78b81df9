"""`python -m loadtests.des.wallbench`: run a seeded agent workload on the discrete-event cluster, once per
policy, and print what each run measured next to the wall time it took (docs/benchmarks.md reproduces with
it). `--cprofile FILE` also writes a cProfile of the runs.

Example: python -m loadtests.des.wallbench --tasks 1000 --replicas 64 --policy round-robin \
    --policy session-affinity
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import time
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.progress import Progress, TextColumn

from loadtests.des.cluster import ProgressCallback, run_cluster
from loadtests.des.result import ClusterProgress, ClusterResult
from loadtests.tasks import AgentTask
from loadtests.workloads.swe import swe_tasks
from loadtests.workloads.webarena import webarena_tasks

WORKLOADS: dict[str, Callable[..., list[AgentTask]]] = {"swe": swe_tasks, "webarena": webarena_tasks}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.des.wallbench", description=__doc__.split("\n")[0])
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="swe")
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--replicas", type=int, default=64)
    p.add_argument("--profile", default="llama3-8b-h100")
    p.add_argument("--policy", action="append", help="repeat to compare (default: round-robin)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, help="closed loop: agents at a time (default: all at once)")
    p.add_argument("--arrival-rate", type=float, help="open loop: Poisson task arrivals per second")
    p.add_argument("--progress", action="store_true", help="show a progress bar (on stderr)")
    p.add_argument("--progress-interval", type=float, default=10.0, help="virtual seconds between updates")
    p.add_argument("--cprofile", metavar="FILE", help="write a cProfile of the runs to FILE")
    p.add_argument(
        "--step-by-step", action="store_true", help="engines without coalesced decoding (same results)"
    )
    return p.parse_args(argv)


def report(policy: str, result: ClusterResult, wall_s: float) -> str:
    s = result.summary()
    reps = result.replicas
    return (
        f"{policy:<18} wall {wall_s:7.1f} s | tasks {s.tasks} (failed {s.failed}) | calls {result.calls} | "
        f"simulated {result.duration_s:8.1f} s | TCT mean {s.tct_mean_s:7.1f} p50 {s.tct_p50_s:7.1f} "
        f"p90 {s.tct_p90_s:7.1f} s | prefix hit {result.prefix_hit_rate():6.1%} | "
        f"preemptions {sum(r.preemptions for r in reps)} | "
        f"recomputed prefill {sum(r.recomputed_prefill_tokens for r in reps)} tok | "
        f"KV mean {sum(r.kv_usage_mean for r in reps) / len(reps):5.1%} | events {result.events}"
    )


def progress_bar(console: Console, policy: str, total: int) -> tuple[Progress, ProgressCallback]:
    """A rich progress bar over finished tasks, and the callback that moves it."""
    bar = Progress(*Progress.get_default_columns(), TextColumn("{task.fields[detail]}"), console=console)
    bar_id = bar.add_task(policy, total=total, detail="")

    def update(p: ClusterProgress) -> None:
        detail = (
            f"t={p.now_s:.0f}s calls {p.calls_finished} running {p.running} waiting {p.waiting} "
            f"KV {p.kv_usage_mean:.0%} preemptions {p.preemptions}"
        )
        bar.update(bar_id, completed=p.tasks_finished, detail=detail)

    return bar, update


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    tasks = WORKLOADS[args.workload](args.tasks, seed=args.seed)
    profiler = cProfile.Profile() if args.cprofile else None
    console = Console(stderr=True)
    for policy in args.policy or ["round-robin"]:
        bar, on_progress = progress_bar(console, policy, len(tasks))
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        with bar if args.progress else contextlib.nullcontext():
            result = run_cluster(
                tasks,
                replicas=args.replicas,
                profile=args.profile,
                policy=policy,
                seed=args.seed,
                concurrency=args.concurrency,
                arrival_rate=args.arrival_rate,
                progress=on_progress if args.progress else None,
                progress_interval_s=args.progress_interval,
                coalesce_decode=not args.step_by_step,
            )
        if profiler is not None:
            profiler.disable()
        print(report(policy, result, time.perf_counter() - started), flush=True)
    if profiler is not None:
        profiler.dump_stats(args.cprofile)


if __name__ == "__main__":
    main()
