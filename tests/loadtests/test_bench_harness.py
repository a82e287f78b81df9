"""The harness around the metrics: router specs, peer command lines, side-by-side runs and their reports."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import msgspec
import pytest

from loadtests.bench import peers
from loadtests.bench.cli import add_bench_parser, run_bench
from loadtests.bench.live import run_router
from loadtests.bench.metrics import PolicyMetrics, time_split
from loadtests.bench.peers import needs_kv_events, parse_router, peer_command, saga_policy, unavailable
from loadtests.bench.report import RunMeta, append_markdown, plot_completion_times, write_json
from loadtests.bench.runner import ContenderRun, ContenderUnavailable, compare
from loadtests.tasks import AgentTask, CallRecord, Step, TaskRecord
from loadtests.workloads.catalog import generate


def test_router_specs_are_checked_and_defaulted() -> None:
    assert parse_router("saga").name == "saga:session-affinity"
    assert parse_router("vllm-router:kv_aware").policy == "kv_aware"
    with pytest.raises(ValueError, match="known: saga, vllm-router, sglang-router"):
        parse_router("nginx:rr")
    with pytest.raises(ValueError, match="has no policy 'lru'"):
        parse_router("vllm-router:lru")
    # SAGA subscribed to the replicas' KV events, like vllm-router's kv_aware
    with_events = parse_router("saga:prefix-load+kv-events")
    assert needs_kv_events(with_events) and saga_policy(with_events) == "prefix-load"
    assert not needs_kv_events(parse_router("saga:saga")) and saga_policy(parse_router("saga:saga")) == "saga"
    assert needs_kv_events(parse_router("vllm-router:kv_aware"))


def test_peer_commands_scale_wall_clock_parameters_by_the_time_scale() -> None:
    urls = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    program = peer_command(parse_router("vllm-router:program"), urls, port=9, metrics_port=10, time_scale=20)
    config = json.loads(program[program.index("--program-scheduling-config-json") + 1])
    assert config["max_acting_ttl_seconds"] == pytest.approx(0.5)
    assert "--enable-program-scheduling" in program and "--disable-retries" in program
    kv = peer_command(
        parse_router("vllm-router:kv_aware"),
        urls,
        port=9,
        metrics_port=10,
        time_scale=10,
        kv_event_sources={urls[0]: "tcp://127.0.0.1:7"},
        block_size=128,
    )
    assert kv[kv.index("--kv-aware-session-affinity-ttl-secs") + 1] == "30"
    assert f"{urls[0]}=tcp://127.0.0.1:7" in kv and kv[kv.index("--kv-event-block-size") + 1] == "128"
    sglang = peer_command(
        parse_router("sglang-router:cache_aware"), urls, port=9, metrics_port=10, time_scale=1
    )
    assert sglang[sglang.index("--policy") + 1] == "cache_aware" and urls[1] in sglang
    balanced = peer_command(
        parse_router("vllm-router:cache_aware_balanced"), urls, port=9, metrics_port=10, time_scale=1
    )
    assert balanced[balanced.index("--policy") + 1] == "cache_aware"
    assert balanced[balanced.index("--balance-abs-threshold") + 1] == "2"


def test_a_missing_peer_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers.importlib.util, "find_spec", lambda name: None)
    reason = unavailable(parse_router("sglang-router:cache_aware"))
    assert reason is not None and "sglang_router is not installed" in reason
    assert unavailable(parse_router("saga:round-robin")) is None


def meta(tasks: int) -> RunMeta:
    return RunMeta(
        title="t", command="saga bench", date="2026-11-25", machine="m", mode="des", workload="swe",
        replicas=2, profile="llama3-8b-h100", tasks=tasks, seed=0,
    )  # fmt: skip


async def test_compare_reports_unavailable_contenders_and_speedups(tmp_path: Path) -> None:
    tasks = [AgentTask("a", 100, 50, [Step(10, "t", 1.0, 40)])]

    async def run_one(name: str) -> ContenderRun:
        if name == "ghost":
            raise ContenderUnavailable("not installed")
        finish = {"slow": 20.0, "fast": 5.0}[name]
        calls = [CallRecord(0, 0.0, 1.0, 0.2, 150, 96, 10)]
        lag = {"slow": 0.5, "fast": None}[name]
        return ContenderRun(
            [TaskRecord("a", "default", "default", 0.0, finish, calls)], preemptions=0, replica_lag_s=lag
        )

    report, times = await compare(["slow", "ghost", "fast"], run_one, tasks, baseline="slow", meta=meta(1))
    assert report.missing == {"ghost": "not installed"}
    assert report.policies["fast"].speedup_vs_baseline == pytest.approx(4.0)
    assert times == {"slow": [20.0], "fast": [5.0]}
    assert report.policies["slow"].replica_lag_s == 0.5 and report.policies["fast"].replica_lag_s is None
    write_json(report, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["policies"]["fast"]["tct_mean_s"] == 5.0
    md = tmp_path / "b.md"
    md.write_text("# kept\n")
    append_markdown(report, md, plot="p.png")
    text = md.read_text()
    assert text.startswith("# kept\n") and "| fast | 1/1 |" in text and "`ghost`: not installed" in text
    plot_completion_times(times, tmp_path / "p.png", "t")
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ContenderUnavailable, match="no contender could run"):
        await compare(["ghost"], run_one, tasks, baseline="ghost", meta=meta(1))


async def test_live_run_through_saga_finishes_every_task_and_affinity_hits_the_cache() -> None:
    tasks = generate("webarena", 6, seed=4)
    tasks = [msgspec.structs.replace(t, steps=t.steps[:3]) for t in tasks]
    common = {"replicas": 2, "profile": "llama3-8b-h100", "time_scale": 500.0, "concurrency": 6}
    affinity = await run_router(parse_router("saga:session-affinity"), tasks, **common)  # type: ignore[arg-type]
    assert [len(r.calls) for r in affinity.records] == [len(t.steps) for t in tasks]
    assert not any(r.failed for r in affinity.records)
    later = [c for r in affinity.records for c in r.calls[1:]]
    assert all(c.cached_tokens > 0 for c in later)
    assert affinity.preemptions == 0 and 0.0 <= affinity.kv_utilization_mean <= 1.0
    # whole answers over HTTP: no first token is seen, so no prefill/decode split is made up from them
    split = time_split(affinity.records)
    assert split is not None and split.prefill_s is None and split.decode_s is None


def test_sweep_peak_throughput_only_counts_loads_where_the_slo_holds() -> None:
    from loadtests.bench.metrics import policy_metrics
    from loadtests.bench.sweep import sweep_load, sweep_markdown

    tasks = generate("webarena", 4, seed=1)

    def run_policy(policy: str, arriving: list[AgentTask]) -> PolicyMetrics:
        # A fake cluster: each task takes 10 s, or 100 s (missing its SLO) for "slow" above 1 task/s.
        last = arriving[-1].arrival_s or 0.0
        rate = len(arriving) / last
        tct = 100.0 if policy == "slow" and rate > 1.0 else 10.0
        records = [
            TaskRecord(t.session_id, "d", "d", t.arrival_s or 0.0, (t.arrival_s or 0.0) + tct, [])
            for t in arriving
        ]
        return policy_metrics(records, arriving, {t.session_id: 9.0 for t in arriving})

    result = sweep_load(["fast", "slow"], [4.0, 0.5], tasks, run_policy, seed=3)
    assert [p.rate_per_s for p in result.points["fast"]] == [0.5, 4.0]
    fast, slow = result.peak_throughput_tasks_per_s["fast"], result.peak_throughput_tasks_per_s["slow"]
    assert fast > slow > 0  # "slow" keeps only its 0.5/s point
    assert "| slow |" in sweep_markdown(result)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--concurrency", "1", "--arrival-rate", "0.5"], "exclude each other"),
        (["--trace", "t.csv", "--arrival-rate", "0.5"], "own arrival times"),
        (["--sweep-load", "0.1,0.2", "--arrival-rate", "0.5"], "leave out --arrival-rate"),
        # the forty-fourth session's review: each was taken beside --trace and ignored in silence
        (["--trace", "t.csv", "--concurrency", "1"], "--concurrency cannot change them"),
        (["--trace", "t.csv", "--tenants", "a:1"], "--tenants cannot change them"),
        (["--trace", "t.csv", "--workload", "swe"], "--workload cannot change them"),
    ],
)
@pytest.mark.parametrize("mode", ["des", "live"])
def test_load_options_that_exclude_each_other_are_refused_before_anything_runs(
    extra: list[str], says: str, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The thirteenth review: `--concurrency 1 --arrival-rate R` ran open loop at R, the cap ignored."""
    if mode == "live" and "--sweep-load" in extra:
        pytest.skip("the live bench has no --sweep-load")
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", mode, "--tasks", "2", "--replicas", "1", *extra])
    assert run_bench(args) == 2
    assert says in capsys.readouterr().out.replace("\n", " ")
