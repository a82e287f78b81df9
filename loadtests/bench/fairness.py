"""`saga bench fairness`: an interactive tenant with an SLO shares replicas with a batch tenant flooding them.

Contract: in the discrete-event cluster (virtual time, deterministic for a seed), the same tasks run under
each contender: `none` (no release queue: every call dispatched at once, today's proxy), and the release
queue with the same gate in `fifo` order (no fairness), `vtc` (token-count fair queueing, the published
baseline) and `afs` (Agent Fair Share: GPU-time fair queueing, least remaining work first within a tenant).
The interactive tenant's tasks arrive open loop (Poisson); the batch tenant runs `--batch-agents` agents
closed loop. Reported per tenant: SLO attainment (task completion within the class's factor x its isolated
time, loadtests/bench/isolated.py), mean and p99 slowdown (completion / isolated), throughput while the
interactive tenant is active; across tenants Jain's index over mean slowdowns; and the fair queue's largest
observed counter spread among backlogged tenants on a replica against its proved bound (docs/fairness.md; in
GPU seconds for afs, tokens for vtc); and the batch tenant's tokens/s over its fair share (the tokens/s the
cluster delivered with no queue, less what the interactive tenant took).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from pathlib import Path

import msgspec
import yaml
from rich.console import Console
from rich.table import Table

from fairness import GpuCostModel, SloClass, TenantsConfig, TenantSpec, jain_index
from loadtests.bench.isolated import isolated_task_time_s
from loadtests.bench.report import machine_description, recorded_command
from loadtests.des.cluster import Cluster
from loadtests.des.result import ClusterConfig, ClusterResult
from loadtests.summary import percentile
from loadtests.tasks import AgentTask
from loadtests.workloads.catalog import WORKLOADS, TenantStream, generate, with_poisson_arrivals
from proxy.arg_types import at_least, output_file, positive
from proxy.scheduler import PRESETS
from proxy.scheduler.registry import PluginSpec
from proxy.scheduler.release import SHARES, ReleaseQueueSpec
from simulator.cost_model import PROFILES, Profile, get_profile

CONTENDERS = ("none", "fifo", "vtc", "afs")
INTERACTIVE, BATCH = "interactive", "batch"


class TenantOutcome(msgspec.Struct, kw_only=True):
    tenant: str
    tasks: int
    failed: int
    slo_attainment: float | None  # None: the tenant's class has no TCT target
    slowdown_mean: float
    slowdown_p99: float
    ttft_p99_s: float
    window_tasks_per_s: float  # tasks finished while the interactive tenant was active, per second
    window_tokens_per_s: float


class ContenderOutcome(msgspec.Struct, kw_only=True):
    name: str
    tenants: list[TenantOutcome]
    jain_slowdown: float
    peak_spread_s: float | None  # largest observed max V - min V among backlogged tenants on a replica
    spread_bound_s: float | None  # the bound that holds there: max C_i / w_i (GPU seconds per weight)
    invariant_held: bool | None
    # Batch tokens/s over its fair share: what the cluster delivered with no queue (`none`, work-conserving)
    # less what the interactive tenant took here. None when `none` did not run.
    batch_fair_share_ratio: float | None = None
    makespan_s: float
    wall_s: float


class FairnessReport(msgspec.Struct, kw_only=True):
    command: str
    date: str
    machine: str
    setup: dict[str, object]
    contenders: list[ContenderOutcome]


def gpu_cost_for(profile: Profile, batch: int) -> GpuCostModel:
    """The cost model's coefficients from a simulator profile, the step floor shared by `batch` sequences."""
    return GpuCostModel(
        per_call_s=profile.step_fixed_ms / 1000.0,
        prefill_token_s=profile.prefill_token_ms / 1000.0,
        attention_pair_s=profile.prefill_attention_ms / 1000.0,
        decode_token_s=profile.step_fixed_ms / 1000.0 / batch,
        decode_context_token_s=profile.decode_ms_per_kctx / 1e6,
    )


def tenants_config(interactive_weight: float, batch_weight: float, slo_factor: float) -> TenantsConfig:
    return TenantsConfig(
        slo_classes={"interactive": SloClass(tct_factor=slo_factor, ttft_s=2.0), "batch": SloClass()},
        tenants={
            INTERACTIVE: TenantSpec(interactive_weight, "interactive"),
            BATCH: TenantSpec(batch_weight, "batch"),
        },
        default=TenantSpec(1.0, "batch"),
    )


def load_tenants(path: Path) -> TenantsConfig:
    """The `tenants` section of a proxy config file (YAML); the tenants here are `interactive` and `batch`."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("tenants"), dict):
        raise ValueError(f"{path}: expected a mapping with a 'tenants' section")
    try:
        tenants = msgspec.convert(data["tenants"], TenantsConfig)
    except msgspec.ValidationError as e:
        raise ValueError(f"{path}: bad tenants section: {e}") from e
    tenants.validate()
    return tenants


def make_tasks(args: argparse.Namespace) -> list[AgentTask]:
    interactive = generate(
        args.interactive_workload,
        args.interactive_tasks,
        seed=args.seed,
        tenants=[TenantStream(INTERACTIVE, 1.0, "interactive", args.interactive_workload)],
    )
    interactive = with_poisson_arrivals(interactive, args.interactive_rate, seed=args.seed)
    batch = generate(
        args.batch_workload,
        args.batch_tasks,
        seed=args.seed + 1,
        tenants=[TenantStream(BATCH, 1.0, "batch", args.batch_workload)],
    )
    return batch + interactive


def cluster_config(
    name: str, args: argparse.Namespace, profile: Profile, tenants: TenantsConfig
) -> ClusterConfig:
    queue = None
    if name != "none":
        queue = ReleaseQueueSpec(
            order=name,
            gate=PluginSpec("max-in-flight-gate", params={"max_in_flight": args.max_in_flight}),
            age_bound_s=args.age_bound_s,
            gpu_cost=gpu_cost_for(profile, args.max_in_flight),
            slo_headroom=args.slo_headroom,
            share=args.share,
            min_active_tenants=args.min_active_tenants,
        )
    return ClusterConfig(
        replicas=args.replicas,
        profile=profile,
        policy=args.policy,
        seed=args.seed,
        concurrency=args.batch_agents,
        kv_scale=args.kv_scale,
        queue=queue,
        tenants=tenants,
    )


def _outcome(
    name: str,
    result: ClusterResult,
    cluster: Cluster,
    tasks: list[AgentTask],
    profile: Profile,
    wall_s: float,
) -> ContenderOutcome:
    tenants = cluster.config.tenants or TenantsConfig()
    by_session = {t.session_id: t for t in tasks}
    isolated = {t.session_id: isolated_task_time_s(t, profile) for t in tasks}
    interactive = [r for r in result.tasks if r.tenant_id == INTERACTIVE]
    window = (
        (min(r.started_s for r in interactive), max(r.finished_s for r in interactive))
        if interactive
        else (0, 0)
    )
    outcomes = []
    for tenant in (INTERACTIVE, BATCH):
        records = [r for r in result.tasks if r.tenant_id == tenant]
        done = [r for r in records if not r.failed]
        slowdowns = [r.completion_time_s / isolated[r.session_id] for r in done]
        factor = tenants.slo(tenant).tct_factor
        met = sum(r.completion_time_s <= factor * isolated[r.session_id] for r in done) if factor else 0
        span = max(window[1] - window[0], 1e-9)
        in_window = [r for r in done if window[0] <= r.finished_s <= window[1]]
        tokens = sum(
            c.prompt_tokens + c.completion_tokens
            for r in records
            for c in r.calls
            if c.error is None and window[0] <= c.started_s + c.latency_s <= window[1]
        )
        ttfts = [  # a whole (non-streamed) answer's latency stands for its TTFT, as in bench/metrics.py
            c.ttft_s if c.ttft_s is not None else c.latency_s
            for r in records
            for c in r.calls
            if c.ttft_s is not None or c.error is None
        ]
        outcomes.append(
            TenantOutcome(
                tenant=tenant,
                tasks=len(records),
                failed=len(records) - len(done),
                slo_attainment=met / len(records) if factor and records else None,
                slowdown_mean=statistics.fmean(slowdowns) if slowdowns else 0.0,
                slowdown_p99=percentile(slowdowns, 99),
                ttft_p99_s=percentile(ttfts, 99),
                window_tasks_per_s=len(in_window) / span,
                window_tokens_per_s=tokens / span,
            )
        )
        assert all(by_session[r.session_id].tenant_id == tenant for r in records)
    release = cluster.core.release
    spread = bound = None
    held = None
    if release is not None and name != "fifo" and release.fleet is None:  # (the bound is per replica)
        peak = max(
            release.lanes.values(), key=lambda lane: lane.peak_spread - lane.peak_spread_bound, default=None
        )
        if peak is not None:
            spread, bound = peak.peak_spread, peak.peak_spread_bound
        held = all(lane.peak_spread <= lane.peak_spread_bound + 1e-9 for lane in release.lanes.values())
    return ContenderOutcome(
        name=name,
        tenants=outcomes,
        jain_slowdown=jain_index(o.slowdown_mean for o in outcomes),
        peak_spread_s=spread,
        spread_bound_s=bound,
        invariant_held=held,
        makespan_s=result.duration_s,
        wall_s=wall_s,
    )


def run_contender(
    name: str, args: argparse.Namespace, tasks: list[AgentTask], profile: Profile, tenants: TenantsConfig
) -> ContenderOutcome:
    cluster = Cluster(tasks, cluster_config(name, args, profile, tenants))
    start = time.perf_counter()
    result = cluster.run()
    return _outcome(name, result, cluster, tasks, profile, time.perf_counter() - start)


def add_fairness_parser(modes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = modes.add_parser("fairness", help="an interactive tenant against a flooding batch tenant (DES)")
    p.add_argument("--contenders", default=",".join(CONTENDERS), help=f"comma-separated of {CONTENDERS}")
    p.add_argument("--replicas", type=at_least(1), default=8, help="simulated replicas")
    p.add_argument(
        "--profile", choices=sorted(PROFILES), default="llama3-8b-h100", help="the replicas' model and GPU"
    )
    p.add_argument(
        "--kv-scale",
        type=positive,
        metavar="F",
        help="KV capacity as a fraction of the profile's (tenants competing for KV, not only for compute)",
    )
    p.add_argument(
        "--policy", choices=sorted(PRESETS), default="session-affinity", help="the routing under the queue"
    )
    p.add_argument(
        "--interactive-workload", choices=WORKLOADS, default="webarena", help="the interactive tenant's"
    )
    p.add_argument("--interactive-tasks", type=at_least(1), default=30, help="the interactive tenant's tasks")
    p.add_argument("--interactive-rate", type=positive, default=0.2, help="interactive tasks per second")
    p.add_argument("--interactive-weight", type=positive, default=1.0, help="its fair-share weight")
    p.add_argument(
        "--slo-factor", type=positive, default=1.5, help="interactive SLO: completion <= F x isolated"
    )
    p.add_argument("--batch-workload", choices=WORKLOADS, default="webarena", help="the batch tenant's")
    p.add_argument("--batch-tasks", type=at_least(1), default=200, help="the batch tenant's tasks")
    p.add_argument("--batch-agents", type=at_least(1), default=96, help="batch agents running at once")
    p.add_argument("--batch-weight", type=positive, default=1.0, help="its fair-share weight")
    p.add_argument(
        "--max-in-flight", type=at_least(1), default=6, help="the gate: calls in flight per replica"
    )
    p.add_argument(
        "--min-active-tenants",
        type=at_least(1),
        default=1,
        help="the queue holds calls only while this many tenants are active (queue.min_active_tenants)",
    )
    p.add_argument(
        "--slo-headroom", type=at_least(0), default=2, help="extra calls per replica for SLO tenants"
    )
    p.add_argument(
        "--share",
        choices=SHARES,
        default="replica",
        help="count a tenant's fair share per replica (the proved bound) or over the fleet (queue.share)",
    )
    p.add_argument(
        "--age-bound-s",
        type=positive,
        default=30.0,
        help="a call held this long goes first, whatever its tenant's share (queue.age_bound_s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the tasks")
    p.add_argument("--json", type=output_file, help="write the results as JSON here")
    p.add_argument(
        "--tenants-config",
        type=Path,
        help="proxy config YAML: its tenants section",
    )


def run_fairness(args: argparse.Namespace) -> int:
    console = Console(width=200)
    names = [n for n in args.contenders.split(",") if n]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown or not names:
        console.print(f"[red]error:[/red] unknown contenders {unknown}; known: {', '.join(CONTENDERS)}")
        return 2
    profile = get_profile(args.profile)
    try:
        tenants = (
            load_tenants(args.tenants_config)
            if args.tenants_config
            else tenants_config(args.interactive_weight, args.batch_weight, args.slo_factor)
        )
        cluster_config("none", args, profile, tenants).resolved_profile().validate()  # a KV scale too small
    except (OSError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        return 2
    tasks = make_tasks(args)
    outcomes = []
    for name in names:
        outcome = run_contender(name, args, tasks, profile, tenants)
        console.print(f"{name}: done in {outcome.wall_s:.0f} s wall")
        outcomes.append(outcome)
    reference = next((o for o in outcomes if o.name == "none"), None)
    if reference is not None:
        capacity = sum(t.window_tokens_per_s for t in reference.tenants)
        for o in outcomes:
            inter, batch = o.tenants
            o.batch_fair_share_ratio = batch.window_tokens_per_s / max(
                1e-9, capacity - inter.window_tokens_per_s
            )
    console.print(results_table(outcomes))
    if args.json:
        setup = {k: v for k, v in vars(args).items() if k not in ("json", "func") and not callable(v)}
        report = FairnessReport(
            command=recorded_command(),
            date=datetime.date.today().isoformat(),
            machine=machine_description(),
            setup={k: str(v) if isinstance(v, Path) else v for k, v in setup.items()},
            contenders=outcomes,
        )
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
        console.print(f"results: {args.json}")
    return 0


def results_table(outcomes: list[ContenderOutcome]) -> Table:
    table = Table(title="Multi-tenant interference (discrete-event cluster)")
    for col in (
        "contender", "interactive SLO", "int. slowdown mean/p99", "int. TTFT p99 s", "batch slowdown",
        "batch tasks/s", "batch tok/s", "batch / fair share", "Jain", "spread / bound", "makespan s",
    ):  # fmt: skip
        table.add_column(col)
    for o in outcomes:
        inter, batch = o.tenants
        spread = "-" if o.peak_spread_s is None else f"{o.peak_spread_s:.3f} / {o.spread_bound_s:.3f}"
        table.add_row(
            o.name,
            "-" if inter.slo_attainment is None else f"{inter.slo_attainment:.1%}",
            f"{inter.slowdown_mean:.2f} / {inter.slowdown_p99:.2f}",
            f"{inter.ttft_p99_s:.2f}",
            f"{batch.slowdown_mean:.2f}",
            f"{batch.window_tasks_per_s:.3f}",
            f"{batch.window_tokens_per_s:,.0f}",
            "-" if o.batch_fair_share_ratio is None else f"{o.batch_fair_share_ratio:.1%}",
            f"{o.jain_slowdown:.3f}",
            spread,
            f"{o.makespan_s:.0f}",
        )
    return table
