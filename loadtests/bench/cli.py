"""`saga bench des` and `saga bench live`: one command per comparison, results printed and written down.

Both take the same workload options; each writes JSON (`--json`), appends a section to a markdown file only
when asked (`--markdown FILE`) and plots completion-time distributions (`--plot`). A run in which some
contender finished no task at all exits 1 (after printing and writing what it has). `des` runs scheduler
policies in the discrete-event cluster (virtual time, deterministic for a seed); `live` runs SAGA and the
peer routers over HTTP in front of simulated replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fairness.tenants import TenantsConfig
from loadtests.bench.ablation import known_policies
from loadtests.bench.des import add_kv_options
from loadtests.bench.fairness import add_fairness_parser, run_fairness
from loadtests.bench.faults import add_faults_parser, run_faults
from loadtests.bench.live import RouterFailed, run_router
from loadtests.bench.metrics import PolicyMetrics
from loadtests.bench.peers import parse_router
from loadtests.bench.report import (
    BenchReport,
    RunMeta,
    append_markdown,
    calls_table,
    failure_lines,
    machine_description,
    plot_completion_times,
    recorded_command,
    results_table,
    time_split_table,
    write_json,
)
from loadtests.bench.runner import ContenderRun, ContenderUnavailable, compare
from loadtests.busy_host import busy_host_warning
from loadtests.des.interrupts import interrupt
from loadtests.tasks import AgentTask
from loadtests.workloads.catalog import (
    DES_ONLY_WORKLOADS,
    WORKLOADS,
    TenantStream,
    check_slo_classes,
    generate,
    parse_tenant_streams,
    with_poisson_arrivals,
)
from loadtests.workloads.trace_replay import load_trace
from proxy.arg_types import at_least, output_file, positive
from simulator.cost_model import PROFILES

DES_POLICIES = "round-robin,least-request,session-affinity,prefix-load,cache-aware,continuum-ttl"
LIVE_ROUTERS = (
    "saga:session-affinity,vllm-router:round_robin,vllm-router:consistent_hash,vllm-router:cache_aware,"
    "vllm-router:kv_aware,vllm-router:program,sglang-router:cache_aware"
)


def _tenants(text: str) -> list[TenantStream]:
    """`name:weight:slo_class:workload,...` (trailing fields optional, workload `swe`); a bad item is
    argparse's error naming it (an unknown SLO class was taken for `standard`)."""
    try:
        streams = parse_tenant_streams(text, default_workload="swe", workloads=WORKLOADS)
        check_slo_classes(streams, TenantsConfig().slo_classes)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return streams


def add_bench_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="compare policies (des) or routers (live) on one agent workload")
    modes = bench.add_subparsers(dest="bench_mode", required=True)
    des = modes.add_parser("des", help="scheduler policies in the discrete-event cluster (virtual time)")
    live = modes.add_parser("live", help="SAGA and peer routers over HTTP in front of simulated replicas")
    add_faults_parser(modes)
    add_fairness_parser(modes)
    for p, default_tasks, default_replicas, workloads in (
        (des, 1000, 64, WORKLOADS),
        (live, 48, 4, tuple(w for w in WORKLOADS if w not in DES_ONLY_WORKLOADS)),
    ):
        # (None until checked: `check_load_options` tells a workload given beside --trace, then makes it swe)
        p.add_argument("--workload", choices=workloads, help="the agent workload (default: swe)")
        p.add_argument("--tasks", type=at_least(1), default=default_tasks, help="tasks to generate")
        p.add_argument("--concurrency", type=at_least(1), help="closed loop: agents running at once")
        p.add_argument("--arrival-rate", type=positive, help="open loop: tasks per second (Poisson)")
        p.add_argument("--tenants", type=_tenants, default=[], help="name:weight:slo_class:workload,...")
        p.add_argument("--trace", type=Path, help="replay sessions from a CSV trace instead of generating")
        p.add_argument("--replicas", type=at_least(1), default=default_replicas, help="simulated replicas")
        p.add_argument(
            "--profile", choices=sorted(PROFILES), default="llama3-8b-h100", help="the replicas' model, GPU"
        )
        p.add_argument("--seed", type=int, default=0, help="seed of the generated tasks and arrivals")
        p.add_argument("--baseline", default=None, help="speedups are against this contender")
        p.add_argument("--json", type=output_file, help="write the results as JSON here")
        p.add_argument(
            "--markdown",
            metavar="FILE",
            type=output_file,
            default=None,
            help="append a results section to FILE",
        )
        p.add_argument("--plot", type=output_file, help="write a completion-time plot (PNG) here")
        p.add_argument("--title", default=None, help="section title in the markdown")
        p.add_argument("--notes", default="", help="a note to record with the results")
    des.add_argument(
        "--sweep-load", metavar="R1,R2,...", help="run every policy at these arrival rates (tasks/s)"
    )
    add_kv_options(des)
    des.add_argument(
        "--policies",
        default=DES_POLICIES,
        help=f"comma-separated (default: the baselines, {DES_POLICIES}); "
        f"known: {', '.join(known_policies())}",
    )
    des.add_argument(
        "--jobs", type=at_least(1), default=1, help="run policies (or sweep cells) in N processes"
    )
    live.add_argument(
        "--routers", default=LIVE_ROUTERS, help="comma-separated KIND:POLICY (default: %(default)s)"
    )
    live.add_argument("--time-scale", type=positive, default=20.0, help="simulated time runs K times faster")
    live.add_argument("--stream", action="store_true", help="stream answers (measures TTFT per token)")
    live.add_argument(
        "--kv-blocks",
        type=at_least(1),
        metavar="N",
        help="KV blocks per replica (vLLM's --num-gpu-blocks-override)",
    )
    from loadtests.bench.overhead import add_overhead_parser

    add_overhead_parser(modes)
    from loadtests.bench.predictor import add_predictor_parser

    add_predictor_parser(modes)
    from loadtests.bench.core import add_core_parser

    add_core_parser(modes)
    from loadtests.bench.grid import add_grid_parser

    add_grid_parser(modes)


def check_load_options(args: argparse.Namespace) -> None:
    """ValueError for load options that exclude each other (each was taken, the other ignored in silence:
    `--concurrency 1 --arrival-rate R` ran open loop at R, the thirteenth review)."""
    rate, sweep = args.arrival_rate is not None, bool(getattr(args, "sweep_load", None))
    if rate and args.concurrency is not None:
        raise ValueError(
            "--concurrency (closed loop) and --arrival-rate (open loop) exclude each other: give one"
        )
    if rate and args.trace is not None:
        raise ValueError("--trace replays the trace's own arrival times: --arrival-rate cannot change them")
    if rate and sweep:
        raise ValueError("--sweep-load gives the arrival rates itself: leave out --arrival-rate")
    if args.trace is not None:  # (each was taken and ignored in silence: the forty-fourth session's review)
        ignored = [
            flag
            for flag, given in (
                ("--concurrency", args.concurrency is not None and not sweep),
                ("--tenants", bool(args.tenants)),
                ("--workload", args.workload is not None),
            )
            if given
        ]
        if ignored:
            raise ValueError(
                f"--trace replays the trace's own sessions, tenants and arrival times: {', '.join(ignored)} "
                "cannot change them (leave out what does not apply)"
            )
    if args.workload is None:
        args.workload = "swe"


def _tasks(args: argparse.Namespace) -> list[AgentTask]:
    if args.trace is not None:
        return load_trace(args.trace)[: args.tasks]
    tasks = generate(args.workload, args.tasks, seed=args.seed, tenants=args.tenants)
    if args.arrival_rate is not None:
        tasks = with_poisson_arrivals(tasks, args.arrival_rate, seed=args.seed)
    return tasks


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _finish(
    args: argparse.Namespace, report: BenchReport, times: dict[str, list[float]], console: Console
) -> None:
    console.print(results_table(report))
    console.print(calls_table(report))
    split = time_split_table(report)
    if split is not None:
        console.print(split)
    for name, reason in report.missing.items():
        console.print(f"[yellow]not run[/yellow] {name}: {reason}")
    for line in failure_lines(report):
        console.print(f"[red]failed[/red] {line}", markup=True, highlight=False)
    for warning in report.warnings:
        console.print(f"[yellow]warning[/yellow] {warning}", highlight=False)
    if args.json:
        write_json(report, args.json)
        console.print(f"results: {args.json}")
    if args.plot:
        plot_completion_times(times, args.plot, f"{report.meta.title}: {report.meta.workload}")
        console.print(f"plot: {args.plot}")
    if args.markdown:
        plot = None
        if args.plot:
            plot = os.path.relpath(args.plot, Path(args.markdown).parent)
        append_markdown(report, args.markdown, plot=plot)
        console.print(f"appended to {args.markdown}")


def _meta(args: argparse.Namespace, mode: str, tasks: Sequence[AgentTask]) -> RunMeta:
    return RunMeta(
        title=args.title or ("Discrete-event cluster" if mode == "des" else "Live routers over HTTP"),
        command=recorded_command(),
        date=datetime.date.today().isoformat(),
        machine=machine_description(),
        mode=mode,
        workload="trace " + args.trace.name if args.trace else args.workload,
        replicas=args.replicas,
        profile=args.profile,
        tasks=len(tasks),
        seed=args.seed,
        notes=args.notes,
    )


async def _bench_live(args: argparse.Namespace, console: Console) -> int:
    tasks = _tasks(args)
    names = [parse_router(r).name for r in args.routers.split(",") if r]
    if not names:
        raise ValueError(f"--routers {args.routers!r} names no router")
    if args.baseline is not None and args.baseline not in names:
        raise ValueError(f"--baseline {args.baseline!r} is not among the routers run: {', '.join(names)}")
    concurrency = args.concurrency if args.concurrency or args.arrival_rate else min(len(tasks), 16)
    with _progress(console) as progress:

        async def run_one(name: str) -> ContenderRun:
            bar = progress.add_task(name, total=len(tasks))
            try:
                run = await run_router(
                    parse_router(name),
                    tasks,
                    replicas=args.replicas,
                    profile=args.profile,
                    time_scale=args.time_scale,
                    concurrency=concurrency,
                    stream=args.stream,
                    on_task_done=lambda: progress.advance(bar),
                    kv_blocks=args.kv_blocks,
                )
            except RouterFailed as e:
                raise ContenderUnavailable(str(e)) from e
            finally:
                progress.remove_task(bar)
            return ContenderRun(
                run.records, run.preemptions, run.kv_utilization_mean, replica_lag_s=run.replica_lag_s
            )

        def on_result(name: str, result: PolicyMetrics | str) -> None:
            if isinstance(result, str):
                progress.console.print(f"{name}: not run ({result})")
            else:
                progress.console.print(
                    f"{name}: TCT mean {result.tct_mean_s:.1f} s in {result.wall_s:.0f} s wall"
                )

        report, times = await compare(
            names, run_one, tasks, baseline=args.baseline or names[0], meta=_meta(args, "live", tasks),
            on_result=on_result,
        )  # fmt: skip
    _finish(args, report, times, console)
    lags = {name: (m.wall_s, m.replica_lag_s or 0.0) for name, m in report.policies.items()}
    warning = busy_host_warning(lags)
    if warning:
        console.print(warning, style="yellow")
    return _exit_status(report, console)


def _sweep(args: argparse.Namespace, console: Console) -> None:
    from loadtests.bench.des import sweep_des
    from loadtests.bench.sweep import plot_sweep, sweep_markdown

    tasks = _tasks(args)  # (a trace's tasks too: each load offers them at its own Poisson arrivals)
    result = sweep_des(args, tasks, console)
    table = sweep_markdown(result)
    console.print(table)
    if args.json:
        stamped = msgspec.structs.replace(
            result,
            command=recorded_command(),
            machine=machine_description(),
            date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        )
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(stamped)) + b"\n")
    meta = _meta(args, "des", tasks)
    if args.plot:
        plot_sweep(result, str(args.plot), f"{meta.workload}, {meta.replicas} replicas ({meta.profile})")
    if args.markdown:
        lines = [
            f"\n## Load sweep — {meta.workload}, {meta.replicas} replicas, {meta.tasks} tasks per point\n",
            f"- Command: `{meta.command}`",
            f"- Machine: {meta.machine}",
            f"- Date: {meta.date}",
            "- Cells: mean task completion time (share of tasks meeting the SLO) at each offered load",
            "",
            table,
            "",
        ]
        if args.plot:
            lines += [
                f"![Completion time against load]({os.path.relpath(args.plot, Path(args.markdown).parent)})"
            ]
        with open(args.markdown, "a") as f:
            f.write("\n".join(lines) + "\n")


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT (Ctrl-C), SIGTERM and SIGHUP (what `timeout`, CI runners and `kill` send) stop a bench at once:
    a KeyboardInterrupt wherever it is, and what it started (peer routers, replicas, nginx, DES workers) is
    stopped by the `finally` blocks on the way out. A SIGTERM ended the process there and then, and the
    vllm-router it had started kept running, holding its ports; Ctrl-C under asyncio.run only cancelled
    the main task, which a DES run (no await in it) heard when it ended (the forty-fourth session's
    review). In the main thread only, where Python runs signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, interrupt) for sig in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_bench(args: argparse.Namespace) -> int:
    """`saga bench MODE`'s exit status; stopped by Ctrl-C, SIGTERM or SIGHUP, it stops what it started and
    says so (status 130)."""
    try:
        with _signals_interrupt():
            return _run_bench(args)
    except KeyboardInterrupt as e:
        print(f"saga bench: stopped ({str(e) or 'SIGINT'}); what it started is stopped", file=sys.stderr)
        return 130


def _run_bench(args: argparse.Namespace) -> int:
    if args.bench_mode == "fairness":
        return run_fairness(args)
    if args.bench_mode == "predictor":
        from loadtests.bench.predictor import main

        return main(args)
    if args.bench_mode == "core":
        from loadtests.bench.core import run_core

        return run_core(args)
    if args.bench_mode == "grid":
        from loadtests.bench.grid import main as run_grid

        return run_grid(args)
    console = Console()
    if not console.is_terminal:  # a log or a pipe: keep every column of the table readable
        console = Console(width=220)
    if args.bench_mode == "overhead":
        from loadtests.bench.overhead import NotStarted, run_overhead

        try:
            return run_overhead(args)
        except NotStarted as e:
            console.print(f"[red]error:[/red] {e}")
            return 2
    try:
        if args.bench_mode in ("des", "live"):
            check_load_options(args)
        if args.bench_mode == "faults":
            return run_faults(args, console)
        if args.bench_mode == "live":
            return asyncio.run(_bench_live(args, console))
        elif args.sweep_load:
            _sweep(args, console)
        else:
            from loadtests.bench.des import bench_des

            report, times = bench_des(args, _tasks(args), _meta, console, _progress)
            _finish(args, report, times, console)
            return _exit_status(report, console)
    except (ValueError, OSError, ContenderUnavailable) as e:
        console.print(f"[red]error:[/red] {e}")
        return 2
    return 0


def _exit_status(report: BenchReport, console: Console) -> int:
    """1 when some contender finished no task: its figures mean nothing, and a script must notice."""
    empty = [name for name, m in report.policies.items() if m.tasks and m.failed == m.tasks]
    if empty:
        console.print(f"[red]error:[/red] every task failed under {', '.join(empty)}")
        return 1
    return 0
