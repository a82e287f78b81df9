"""`saga bench des`: scheduler policies side by side in the discrete-event cluster.

Contract: every policy runs the same tasks on a fresh cluster with the same seed (loadtests.des.cluster), so
the results are deterministic for a seed and differences come from the policy alone. Engine figures come from
the cluster's per-replica counters: preemptions summed, KV utilisation averaged over replicas (time-weighted).
With `--jobs N` (N > 1) the runs (policies, or sweep cells) go to N worker processes; a run's results do not
depend on where it ran, so they equal a serial run's, and each policy's `wall_s` is its run's own wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import msgspec
from rich.console import Console
from rich.progress import Progress

from loadtests.bench.ablation import cluster_options, is_known, known_policies, policy_for
from loadtests.bench.isolated import isolated_task_time_s
from loadtests.bench.metrics import PolicyMetrics, policy_metrics
from loadtests.bench.report import BenchReport, RunMeta
from loadtests.bench.runner import ContenderRun, compare
from loadtests.bench.sweep import SweepPoint, SweepResult, sweep_load
from loadtests.des.cluster import run_cluster
from loadtests.des.result import ClusterProgress, ClusterResult, KvFigures
from loadtests.tasks import AgentTask
from simulator.cost_model import get_profile


def contender_run(result: ClusterResult) -> ContenderRun:
    replicas = result.replicas
    reused = sum(r.blocks_reused for r in replicas)
    return ContenderRun(
        records=result.tasks,
        preemptions=sum(r.preemptions for r in replicas),
        kv_utilization_mean=sum(r.kv_usage_mean for r in replicas) / len(replicas) if replicas else 0.0,
        useful_kv_fraction=reused / cached if (cached := sum(r.blocks_cached for r in replicas)) else None,
        kv=result.kv_figures(),
    )


def add_kv_options(p: argparse.ArgumentParser) -> None:
    """`saga bench des` options for KV capacity and CPU offload (per replica)."""
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--kv-blocks", type=int, metavar="N", help="KV blocks per replica (vLLM's --num-gpu-blocks-override)"
    )
    size.add_argument(
        "--kv-scale", type=float, metavar="F", help="KV capacity as a fraction of the profile's"
    )
    p.add_argument(
        "--kv-offload-gib",
        type=float,
        metavar="GIB",
        help="CPU KV offload pool per replica (vLLM's --kv-offloading-backend native --kv-offloading-size)",
    )


def kv_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"kv_blocks": args.kv_blocks, "kv_scale": args.kv_scale, "kv_offload_gib": args.kv_offload_gib}


def worker_pool(jobs: int, runs: int) -> ProcessPoolExecutor | None:
    """Worker processes for `runs` independent runs, or None to run them here (`jobs` <= 1 or one run)."""
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    if jobs == 1 or runs <= 1:
        return None
    # spawn: a fresh interpreter per worker, nothing inherited from this process's threads or console
    pool = ProcessPoolExecutor(max_workers=min(jobs, runs), mp_context=multiprocessing.get_context("spawn"))
    # Started now, ignoring Ctrl-C for good (a Python started with SIGINT ignored keeps it so): Ctrl-C reaches
    # the whole process group, and a worker it caught starting up printed its traceback (2 to 10 runs of 10,
    # the nineteenth review); this process stops them (`stopped_on_interrupt`).
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for _ in range(min(jobs, runs)):
                pool.submit(int)  # each submit with no idle worker spawns one
        finally:
            signal.signal(signal.SIGINT, previous)
    return pool


@contextlib.contextmanager
def stopped_on_interrupt(pool: ProcessPoolExecutor) -> Iterator[ProcessPoolExecutor]:
    """`with pool`, but an exception on the way (Ctrl-C, SIGTERM: KeyboardInterrupt) stops its workers at once
    instead of waiting for every queued run to finish (Ctrl-C during `saga bench des` let each policy run to
    its end, ~20 s, the forty-fourth session's review)."""
    try:
        yield pool
    except BaseException:
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Stops the pool's workers now, their runs and the queued ones dropped."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):  # (no public way before 3.14)
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def timed_contender_run(tasks: Sequence[AgentTask], options: dict[str, Any]) -> tuple[ContenderRun, float]:
    """One policy's cluster run (`options`: run_cluster's keywords) and its wall time; runs in a worker."""
    started = time.perf_counter()
    run = contender_run(run_cluster(tasks, **options))
    return run, time.perf_counter() - started


def bench_des(
    args: argparse.Namespace,
    tasks: list[AgentTask],
    meta: Callable[[argparse.Namespace, str, Sequence[AgentTask]], RunMeta],
    console: Console,
    progress_factory: Callable[[Console], Progress],
) -> tuple[BenchReport, dict[str, list[float]]]:
    policies = [p for p in args.policies.split(",") if p]
    unknown = [p for p in policies if not is_known(p)]
    if unknown or not policies:
        raise ValueError(
            f"unknown or no policies {', '.join(unknown)}; known: {', '.join(known_policies())}"
            " (each also with '+kv-events')"
        )
    if args.baseline is not None and args.baseline not in policies:
        raise ValueError(f"--baseline {args.baseline!r} is not among the policies run: {', '.join(policies)}")

    def options(name: str) -> dict[str, Any]:
        return dict(
            replicas=args.replicas,
            profile=args.profile,
            policy=policy_for(name),
            seed=args.seed,
            concurrency=args.concurrency,
            **kv_options(args),
            **cluster_options(name),
        )

    pool = worker_pool(getattr(args, "jobs", 1), len(policies))
    if pool is not None:
        with stopped_on_interrupt(pool):
            futures = {name: pool.submit(timed_contender_run, tasks, options(name)) for name in policies}
            return _report_parallel(args, tasks, meta, console, futures)

    with progress_factory(console) as progress:

        async def run_one(name: str) -> ContenderRun:
            bar = progress.add_task(name, total=len(tasks))

            def advance(p: ClusterProgress) -> None:
                progress.update(bar, completed=p.tasks_finished)

            try:
                result = run_cluster(tasks, progress=advance, **options(name))
            finally:
                progress.remove_task(bar)
            return contender_run(result)

        def on_result(name: str, result: PolicyMetrics | str) -> None:
            if isinstance(result, PolicyMetrics):
                progress.console.print(
                    f"{name}: TCT geomean {result.tct_geomean_s:.1f} s, hit {result.prefix_hit_rate:.1%}, "
                    f"{result.wall_s:.0f} s wall"
                )
                if result.kv is not None:
                    progress.console.print(f"  {kv_line(result.kv)}")

        return asyncio.run(
            compare(
                policies,
                run_one,
                tasks,
                baseline=args.baseline or "session-affinity",
                meta=meta(args, "des", tasks),
                on_result=on_result,
            )
        )


def _report_parallel(
    args: argparse.Namespace,
    tasks: list[AgentTask],
    meta: Callable[[argparse.Namespace, str, Sequence[AgentTask]], RunMeta],
    console: Console,
    futures: dict[str, Future[tuple[ContenderRun, float]]],
) -> tuple[BenchReport, dict[str, list[float]]]:
    """The report of policies run in worker processes, in the order asked; wall_s is each run's own."""
    walls: dict[str, float] = {}

    async def run_one(name: str) -> ContenderRun:
        run, walls[name] = await asyncio.wrap_future(futures[name])
        return run

    def on_result(name: str, result: PolicyMetrics | str) -> None:
        if isinstance(result, PolicyMetrics):
            console.print(
                f"{name}: TCT geomean {result.tct_geomean_s:.1f} s, hit {result.prefix_hit_rate:.1%}, "
                f"{walls[name]:.0f} s wall (in a worker)"
            )
            if result.kv is not None:
                console.print(f"  {kv_line(result.kv)}")

    report, times = asyncio.run(
        compare(
            list(futures),
            run_one,
            tasks,
            baseline=args.baseline or "session-affinity",
            meta=meta(args, "des", tasks),
            on_result=on_result,
        )
    )
    for name, m in report.policies.items():
        report.policies[name] = msgspec.structs.replace(m, wall_s=walls[name])
    return report, times


def kv_line(kv: KvFigures) -> str:
    line = (
        f"KV oversubscription peak {kv.oversubscription_peak:.2f}x, mean {kv.oversubscription_mean:.2f}x "
        f"of {kv.kv_capacity_tokens:,} tokens"
    )
    if kv.offload_gib_per_replica:
        line += (
            f"; CPU offload {kv.offload_gib_per_replica:g} GiB/replica: stored {kv.offload_stored_tokens:,}, "
            f"loaded {kv.offload_loaded_tokens:,} tokens"
        )
    if (wasted := kv.retained_wasted_fraction) is not None:
        line += (
            f"; retained KV {kv.retained_block_s_used:,.0f} block-s used by returning sessions, "
            f"{kv.retained_block_s_wasted:,.0f} wasted ({wasted:.0%}; "
            f"expired {kv.retained_block_s_expired:,.0f})"
        )
    return line


def sweep_cell(
    policy: str,
    arriving: list[AgentTask],
    concurrency: int | None = None,
    *,
    replicas: int,
    profile: str,
    seed: int,
    isolated: dict[str, float],
    kv: dict[str, Any],
) -> PolicyMetrics:
    """One policy at one offered load (a sweep cell; `concurrency`: the closed-loop saturation run); runs in a
    worker with `--jobs`."""
    run = contender_run(
        run_cluster(
            arriving,
            replicas=replicas,
            profile=profile,
            policy=policy_for(policy),
            seed=seed,
            concurrency=concurrency,
            **kv,
            **cluster_options(policy),
        )
    )
    m = policy_metrics(run.records, arriving, isolated, preemptions=run.preemptions)
    return msgspec.structs.replace(m, kv=run.kv)


def sweep_des(args: argparse.Namespace, tasks: list[AgentTask], console: Console) -> SweepResult:
    """Every policy at every rate of `--sweep-load` (see loadtests/bench/sweep.py)."""
    policies = [p for p in args.policies.split(",") if p]
    rates = [float(r) for r in args.sweep_load.split(",") if r]
    if not rates or min(rates) <= 0:
        raise ValueError(f"--sweep-load needs positive rates, got {args.sweep_load!r}")
    profile = get_profile(args.profile)
    isolated = {t.session_id: isolated_task_time_s(t, profile) for t in tasks}
    run_policy = functools.partial(
        sweep_cell,
        replicas=args.replicas,
        profile=args.profile,
        seed=args.seed,
        isolated=isolated,
        kv=kv_options(args),
    )

    def on_point(policy: str, point: SweepPoint) -> None:
        m = point.metrics
        console.print(
            f"{policy} @ {point.rate_per_s:g}/s: TCT mean {m.tct_mean_s:.1f} s, "
            f"SLO met {m.slo_attainment:.0%}"
        )

    # The baseline's saturating throughput: every task offered at once (or --concurrency at a time, closed
    # loop), so the cluster has work queued for the whole run.
    baseline = args.baseline or "session-affinity"
    console.print(f"saturation run ({baseline}, {args.concurrency or 'all'} tasks at once):")
    saturation = run_policy(baseline, tasks, args.concurrency).throughput_tasks_per_s
    console.print(f"saturating throughput of {baseline}: {saturation:.3f} tasks/s")
    sweep = functools.partial(
        sweep_load,
        policies,
        rates,
        tasks,
        run_policy,
        seed=args.seed,
        on_point=on_point,
        saturation_tasks_per_s=saturation or None,
        saturation_policy=baseline,
    )
    pool = worker_pool(getattr(args, "jobs", 1), len(policies) * len(rates))
    if pool is None:
        return sweep()
    with stopped_on_interrupt(pool):
        return sweep(pool=pool)
