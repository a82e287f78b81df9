"""KV capacity and CPU offload as knobs of the discrete-event cluster, and the oversubscription it reports."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import msgspec
import pytest

from loadtests.bench.cli import add_bench_parser
from loadtests.des.cluster import run_cluster
from loadtests.des.kv_figures import Oversubscription
from loadtests.des.result import ClusterConfig
from loadtests.tasks import AgentTask, Step
from loadtests.workloads.distributions import LogNormal, ToolKind
from loadtests.workloads.swe import SweParams, swe_tasks
from simulator.cost_model import get_profile

H100_8B = get_profile("llama3-8b-h100")


def test_kv_blocks_and_kv_scale_set_each_replicas_capacity() -> None:
    assert ClusterConfig(kv_blocks=1001).resolved_profile().kv_capacity_tokens == 1000 * 16
    half = ClusterConfig(kv_scale=0.5).resolved_profile().kv_capacity_tokens
    assert half == H100_8B.kv_capacity_tokens // 2 and half % 16 == 0
    assert ClusterConfig().resolved_profile() == H100_8B
    with pytest.raises(ValueError, match="not both"):
        ClusterConfig(kv_blocks=100, kv_scale=0.5).validate()
    small = ClusterConfig(kv_scale=0.1).resolved_profile()  # 43k tokens: a 128k-token request cannot run
    assert small.max_model_len == small.kv_capacity_tokens == H100_8B.kv_capacity_tokens // 10 // 16 * 16
    with pytest.raises(ValueError, match="at least 2"):
        ClusterConfig(kv_blocks=1).validate()
    with pytest.raises(ValueError, match="kv_offload_gib must be positive"):
        ClusterConfig(kv_offload_gib=0).validate()
    no_bytes = msgspec.structs.replace(H100_8B, kv_bytes_per_token=0)
    with pytest.raises(ValueError, match="cannot offload"):
        ClusterConfig(profile=no_bytes, kv_offload_gib=1).validate()


class _Conv:
    def __init__(self, n: int) -> None:
        self.tokens = [0] * n


class _Run:
    def __init__(self, n: int) -> None:
        self.conversation = _Conv(n)


def test_oversubscription_peak_and_time_average_by_hand() -> None:
    over = Oversubscription(capacity_tokens=1000)
    a, b = _Run(100), _Run(300)
    over.update(a)
    over.update(b)
    assert over.sample(0.0) == pytest.approx(0.4)
    a.conversation.tokens += [0] * 500  # a grows to 600 tokens between calls
    over.update(a)
    assert over.sample(1.0) == pytest.approx(0.9)
    over.remove(b)
    assert over.sample(3.0) == pytest.approx(0.6)
    assert over.peak == pytest.approx(0.9)
    # 0.4 for 1 s, 0.9 for 2 s, 0.6 for the last 1 s of [0, 4]
    assert over.mean(4.0) == pytest.approx((0.4 + 1.8 + 0.6) / 4)


def test_cluster_oversubscription_of_two_overlapping_single_call_tasks() -> None:
    long_wait = Step(output_tokens=50, tool_name="t", tool_time_s=10.0, observation_tokens=0)
    short_wait = Step(output_tokens=50, tool_name="t", tool_time_s=2.0, observation_tokens=0)
    a = AgentTask("a", system_tokens=512, task_tokens=1488, steps=[long_wait], arrival_s=0.0)
    b = AgentTask("b", system_tokens=512, task_tokens=488, steps=[short_wait], arrival_s=1.0)
    result = run_cluster([a, b], replicas=2, kv_blocks=2001, stats_interval_s=0.01, policy="round-robin")
    capacity = 2 * 2000 * 16
    assert result.kv_capacity_tokens == capacity
    assert result.kv_oversubscription_peak == pytest.approx(3000 / capacity)
    ra, rb = result.tasks
    # each task's context (its prompt: one call) counts while it lives; sampling every 10 ms holds values
    expected = (2000 * (ra.finished_s - ra.started_s) + 1000 * (rb.finished_s - rb.started_s)) / capacity
    assert result.kv_oversubscription_mean == pytest.approx(expected / result.duration_s, rel=0.01)
    figures = result.kv_figures()
    assert (figures.oversubscription_peak, figures.offload_gib_per_replica) == (
        result.kv_oversubscription_peak,
        None,
    )


# Coding agents growing to ~10k tokens on 16k tokens of KV per replica (as the memory-pressure test)
PRESSURE = SweParams(
    calls_per_task=LogNormal(6, 10, cap=10),
    max_context_tokens=10_000,
    tools=[ToolKind("bash", 1.0, LogNormal(0.2, 0.4))],
)


def test_cpu_offload_serves_evicted_prefixes_from_host_memory() -> None:
    tasks = swe_tasks(12, seed=8, params=PRESSURE)
    common = dict(replicas=2, policy="session-affinity", kv_blocks=1025)  # 16k tokens each
    plain = run_cluster(tasks, **common)  # type: ignore[arg-type]
    offload = run_cluster(tasks, **common, kv_offload_gib=2.0)  # type: ignore[arg-type]
    again = run_cluster(tasks, **common, kv_offload_gib=2.0)  # type: ignore[arg-type]
    assert msgspec.to_builtins(offload) == msgspec.to_builtins(again)  # deterministic
    for result in (plain, offload):
        assert not any(t.failed for t in result.tasks)
        assert result.kv_oversubscription_peak > 1.0  # the agents' contexts do not all fit
    kv, none = offload.kv_figures(), plain.kv_figures()
    assert kv.offload_gib_per_replica == 2.0 and kv.offload_loaded_tokens > 0 and kv.offload_stored_tokens > 0
    assert none.offload_loaded_tokens == none.offload_stored_tokens == 0

    def cached(result: object) -> int:
        return sum(c.cached_tokens for t in result.tasks for c in t.calls)  # type: ignore[attr-defined]

    def prefilled(result: object) -> int:
        return sum(r.prefill_tokens for r in result.replicas)  # type: ignore[attr-defined]

    assert cached(offload) > cached(plain)
    assert prefilled(offload) < prefilled(plain)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="saga")
    add_bench_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_bench_des_kv_flags() -> None:
    args = parse(["bench", "des", "--kv-scale", "0.5", "--kv-offload-gib", "64"])
    assert (args.kv_scale, args.kv_blocks, args.kv_offload_gib) == (0.5, None, 64.0)
    assert parse(["bench", "des", "--kv-blocks", "9000"]).kv_blocks == 9000
    with pytest.raises(SystemExit):
        parse(["bench", "des", "--kv-blocks", "9000", "--kv-scale", "0.5"])


def test_bench_des_json_carries_oversubscription_and_offload(tmp_path: Path) -> None:
    from proxy.cli import main

    out = tmp_path / "r.json"
    argv = ["bench", "des", "--workload", "swe", "--tasks", "3", "--replicas", "2", "--policies"]
    argv += [
        "session-affinity",
        "--kv-scale",
        "0.5",
        "--kv-offload-gib",
        "8",
        "--markdown",
        "",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    kv = json.loads(out.read_text())["policies"]["session-affinity"]["kv"]
    assert kv["kv_capacity_tokens"] == 2 * (H100_8B.kv_capacity_tokens // 2)
    assert 0 < kv["oversubscription_mean"] <= kv["oversubscription_peak"]
    assert kv["offload_gib_per_replica"] == 8.0 and kv["offload_stored_tokens"] > 0
    bad = ["bench", "des", "--tasks", "1", "--replicas", "1", "--kv-offload-gib", "-1", "--markdown", ""]
    assert main(bad) == 2  # refused before running, naming the field


def test_sweep_points_state_their_load_as_a_fraction_of_saturation() -> None:
    from loadtests.bench.metrics import PolicyMetrics, policy_metrics
    from loadtests.bench.sweep import sweep_load, sweep_markdown
    from loadtests.tasks import TaskRecord
    from loadtests.workloads.catalog import generate

    tasks = generate("webarena", 3, seed=1)

    def run_policy(policy: str, arriving: list[AgentTask]) -> PolicyMetrics:
        records = [TaskRecord(t.session_id, "d", "d", 0.0, 10.0, []) for t in arriving]
        return policy_metrics(records, arriving, {t.session_id: 9.0 for t in arriving})

    result = sweep_load(["p"], [0.5, 1.0], tasks, run_policy, seed=0, saturation_tasks_per_s=2.0)
    assert [p.load_fraction for p in result.points["p"]] == [0.25, 0.5]
    assert result.saturation_tasks_per_s == 2.0
    assert "(0.25x sat.)" in sweep_markdown(result)
    plain = sweep_load(["p"], [0.5], tasks, run_policy, seed=0)
    assert plain.points["p"][0].load_fraction is None and "sat." not in sweep_markdown(plain)


def test_an_idle_replica_waits_for_the_load_then_serves_the_prefix_from_cpu() -> None:
    # A's second call comes after a 30 s tool wait, by when B (arriving at 2 s) has pushed A's context out
    # of the 16k tokens of GPU KV and finished: the replica is idle while A's blocks load back.
    a = AgentTask(
        "a",
        system_tokens=512,
        task_tokens=7488,
        steps=[Step(50, "t", 30.0, 100), Step(50, "t", 0.0, 0)],
        arrival_s=0.0,
    )
    b = AgentTask("b", system_tokens=512, task_tokens=14_488, steps=[Step(50, "t", 1.0, 0)], arrival_s=2.0)
    runs = {
        gib: run_cluster([a, b], replicas=1, kv_blocks=1001, policy="round-robin", kv_offload_gib=gib)
        for gib in (None, 4.0)
    }
    plain, offload = (runs[g].tasks[0].calls[1] for g in (None, 4.0))
    on_gpu = plain.cached_tokens  # what B left of A's prefix (the shared system prompt and a little more)
    assert 512 <= on_gpu < 2000
    assert offload.cached_tokens == 8000  # all of A's first prompt: the GPU's part, the rest from CPU
    assert runs[4.0].kv_figures().offload_loaded_tokens == 8000 - on_gpu
    load_s = (8000 - on_gpu) // 16 * H100_8B.kv_bytes_per_block / (H100_8B.host_link_gb_per_s * 1e9)
    assert offload.ttft_s is not None and plain.ttft_s is not None
    assert load_s < offload.ttft_s < plain.ttft_s
