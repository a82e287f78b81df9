"""`saga demo`: the embedded default end to end — simulated replicas, the proxy, an agent workload.

Each policy gets a fresh set of simulated replicas (cold caches) and the same seeded tasks, so the only
difference between runs is the routing. Times are simulated seconds (wall seconds x time scale). The replicas
run against wall-clock time, so a host too busy to keep up changes the comparison: when any replica fell
behind its clock for more than 2% of a policy's run, the demo says so under its table (loadtests.busy_host).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import aiohttp
import msgspec
from rich.console import Console
from rich.table import Table

from loadtests.agent_client import AgentClient
from loadtests.bench.metrics import common_survivors
from loadtests.busy_host import busy_host_warning
from loadtests.summary import Summary, summarize
from loadtests.workloads.demo import demo_tasks
from proxy.config import ProxyConfig
from proxy.server import running_proxy
from simulator.server import start_fleet


class DemoConfig(msgspec.Struct, kw_only=True):
    replicas: int = 4
    sessions: int = 48
    steps: int = 12
    time_scale: float = 4.0
    policies: list[str] = msgspec.field(default_factory=lambda: ["round-robin", "session-affinity", "saga"])
    # KV blocks per replica (vLLM's --num-gpu-blocks-override): 8,000 x 16 tokens holds about 12 of the demo's
    # grown conversations, so 12 agents per replica press on the KV cache as a busy fleet does
    kv_blocks: int | None = 8000
    # the replicas' load is scraped this often (wall seconds; x time_scale in simulated time)
    health_interval_s: float = 0.5
    profile: str = "llama3-8b-h100"
    seed: int = 0
    stream: bool = False


class PolicyRun(msgspec.Struct, frozen=True):
    summary: Summary
    wall_s: float
    lag_s: float  # the most wall seconds a replica fell behind its clock (simulator.driver)
    finished: dict[str, float] = msgspec.field(default_factory=dict)  # session id -> TCT, tasks it finished


async def run_policy(config: DemoConfig, policy: str) -> PolicyRun:
    tasks = demo_tasks(config.sessions, config.steps, seed=config.seed)
    fleet = await start_fleet(
        config.replicas, time_scale=config.time_scale, profile=config.profile, num_gpu_blocks=config.kv_blocks
    )
    started = time.monotonic()
    try:
        # no access log: the demo prints its table, not a line per call
        proxy_config = ProxyConfig(
            replicas=fleet.urls,
            policy=policy,
            seed=config.seed,
            port=0,
            access_log=False,
            health_interval_s=config.health_interval_s,
            time_scale=config.time_scale,
        )
        async with running_proxy(proxy_config) as url, aiohttp.ClientSession() as session:
            client = AgentClient(session, url, time_scale=config.time_scale, stream=config.stream)
            records = await client.run_all(tasks)
        wall_s = time.monotonic() - started
    finally:
        await fleet.close()
    finished = {r.session_id: r.completion_time_s for r in records if not r.failed}
    return PolicyRun(summarize(records), wall_s, fleet.lag_s(), finished)


async def run_demo(config: DemoConfig, console: Console | None = None) -> dict[str, PolicyRun]:
    if console is None:
        console = Console()
        if not console.is_terminal:  # a log or a pipe: the table as in a wide terminal, headers whole
            console = Console(width=160)
    results: dict[str, PolicyRun] = {}
    console.print(
        f"SAGA demo: {config.sessions} agent tasks x {config.steps} LLM calls, {config.replicas} simulated "
        f"replicas ({config.profile}), simulated time x{config.time_scale:g}"
    )
    for policy in config.policies:
        with console.status(f"running {policy} ..."):
            results[policy] = await run_policy(config, policy)
    summaries = {policy: run.summary for policy, run in results.items()}
    finished = {policy: run.finished for policy, run in results.items()}
    console.print(results_table(summaries, config.policies[0], finished))
    warning = busy_host_warning({policy: (run.wall_s, run.lag_s) for policy, run in results.items()})
    if warning:
        console.print(warning, style="yellow")
    for policy, run in results.items():  # failed work is a result: said, with why (and the exit status)
        s = run.summary
        if s.failed:
            reasons = "; ".join(f"{reason} ({n})" for reason, n in sorted(s.failed_reasons.items()))
            console.print(f"{policy}: {s.failed} of {s.tasks} tasks failed: {reasons}", style="red")
    return results


def results_table(
    results: dict[str, Summary], baseline: str, finished: Mapping[str, Mapping[str, float]]
) -> Table:
    """The demo's table. The speedup compares mean completion times over the tasks every policy finished
    (`finished`: policy -> session id -> TCT), as `bench des` and `bench live` do: over each policy's own
    survivors, one that failed its longest tasks looked faster."""
    table = Table(title="Task completion time (simulated seconds) and prefix-cache hit rate per policy")
    table.add_column("policy", no_wrap=True)
    for column in ("tasks ok", "mean", "p50", "p90", "prefix hit", f"speedup vs {baseline}"):
        table.add_column(column, justify="right")
    common = common_survivors(finished)
    base = _mean_over(finished[baseline], common)
    for policy, s in results.items():
        mean = _mean_over(finished[policy], common)
        speedup = base / mean if mean else 0.0
        table.add_row(
            policy,
            f"{s.tasks - s.failed}/{s.tasks}",
            f"{s.tct_mean_s:.1f}",
            f"{s.tct_p50_s:.1f}",
            f"{s.tct_p90_s:.1f}",
            f"{s.prefix_hit_rate:.1%}",
            f"{speedup:.2f}x",
        )
    return table


def _mean_over(times: Mapping[str, float], tasks: set[str]) -> float:
    return sum(times[t] for t in tasks) / len(tasks) if tasks else 0.0
