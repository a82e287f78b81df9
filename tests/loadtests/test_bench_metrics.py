"""The harness's metrics on hand-made traces with known answers."""

from __future__ import annotations

import math

import pytest

from loadtests.bench.isolated import isolated_task_time_s
from loadtests.bench.metrics import policy_metrics, time_split, with_speedups
from loadtests.tasks import AgentTask, CallRecord, Step, TaskRecord
from simulator.cost_model import Profile, get_profile


def call(
    step: int, prompt: int, cached: int, out: int, ttft: float = 0.1, error: str | None = None
) -> CallRecord:
    return CallRecord(step, 0.0, 1.0, ttft, prompt, cached, out, error=error)


def task(sid: str, slo: str = "standard", replace: bool = False) -> AgentTask:
    return AgentTask(sid, 100, 50, [Step(10, "t", 1.0, 40)] * 3, slo_class=slo, replace_history=replace)


def test_times_hits_recompute_slo_and_throughput_on_a_known_trace() -> None:
    tasks = [task("a"), task("b", slo="batch"), task("c")]
    records = [
        # a: 10 s; the second call lost 60 of the 160 tokens it had before (prompt 200 = 150 + 10 + 40).
        TaskRecord(
            "a", "t", "x", 0.0, 10.0, [call(0, 150, 0, 10), call(1, 200, 100, 10), call(2, 250, 208, 10)]
        ),
        # b: 40 s, batch class; its calls all hit.
        TaskRecord(
            "b", "t", "x", 0.0, 40.0, [call(0, 150, 96, 10, ttft=0.3), call(1, 200, 160, 10, ttft=0.5)]
        ),
        # c: failed on its second call.
        TaskRecord("c", "t", "x", 5.0, 20.0, [call(0, 150, 0, 10), call(1, 0, 0, 0, error="HTTP 503")]),
    ]
    isolated = {"a": 8.0, "b": 20.0, "c": 8.0}
    m = policy_metrics(records, tasks, isolated, preemptions=4)
    assert (m.tasks, m.failed, m.calls) == (3, 1, 6)
    assert m.tct_mean_s == 25.0 and m.tct_geomean_s == pytest.approx(20.0)
    assert m.tct_p50_s == 25.0 and m.tct_p99_s == pytest.approx(39.7)
    # a: 10 <= 1.5 x 8 meets; b: 40 <= 3.0 x 20 meets (batch); c failed: 2 of 3.
    assert m.slo_attainment == pytest.approx(2 / 3)
    prompt = 150 + 200 + 250 + 150 + 200 + 150
    assert m.prefix_hit_rate == pytest.approx((100 + 208 + 96 + 160) / prompt)
    # a: call 1 had 160 before, cached 100 -> 60; call 2 had 210, cached 208 -> 2. b: 160 - 160 -> 0.
    assert m.recomputed_prefill_tokens == 62
    assert m.makespan_s == 40.0 and m.throughput_tasks_per_s == pytest.approx(2 / 40)
    assert m.throughput_tokens_per_s == pytest.approx((prompt + 60) / 40)
    assert m.ttft_p50_s == pytest.approx(0.1) and m.preemptions == 4


def test_a_task_that_replaces_its_history_only_carries_its_system_prompt_over() -> None:
    records = [TaskRecord("r", "t", "x", 0.0, 5.0, [call(0, 150, 0, 10), call(1, 140, 64, 10)])]
    m = policy_metrics(records, [task("r", replace=True)], {"r": 5.0})
    assert m.recomputed_prefill_tokens == 100 - 64


def test_speedups_are_against_the_baselines_geometric_mean() -> None:
    base = policy_metrics(
        [TaskRecord("a", "t", "x", 0.0, 10.0, [call(0, 150, 0, 10)])], [task("a")], {"a": 1}
    )
    fast = policy_metrics([TaskRecord("a", "t", "x", 0.0, 4.0, [call(0, 150, 0, 10)])], [task("a")], {"a": 1})
    out = with_speedups({"base": base, "fast": fast}, "base")
    assert out["base"].speedup_vs_baseline == 1.0
    assert out["fast"].speedup_vs_baseline == pytest.approx(2.5)
    with pytest.raises(ValueError, match="baseline 'nope' was not run"):
        with_speedups(out, "nope")


def test_isolated_time_is_the_cost_model_summed_over_calls_plus_tools() -> None:
    flat = Profile(
        name="flat",
        source="test",
        block_size=16,
        kv_capacity_tokens=16_000,
        max_num_batched_tokens=64,
        max_model_len=4096,
        step_fixed_ms=10.0,
        prefill_token_ms=0.0,
        linear_knee_tokens=0,
        prefill_attention_ms=0.0,
        decode_ms_per_kctx=0.0,
    )
    # 100 system + 50 task tokens; system's 96 full-block tokens are cached: 54 to prefill = 1 chunk step,
    # then 9 decode steps. Next call: 150 + 10 + 40 = 200 tokens, 160 cached -> 40 = 1 step, 9 decode steps.
    # Third call: 250 tokens, 208 cached -> 1 step + 9. Each call 10 steps x 10 ms; tools 3 x 1 s.
    assert isolated_task_time_s(task("a"), flat) == pytest.approx(3 * 0.1 + 3.0)
    real = get_profile("llama3-8b-h100")
    assert isolated_task_time_s(task("a"), real) > 3.0 and math.isfinite(
        isolated_task_time_s(task("a"), real)
    )


def test_time_split_adds_up_to_the_completion_time_and_separates_first_and_later_queues() -> None:
    calls = [
        CallRecord(step=0, started_s=0.0, latency_s=10.0, ttft_s=4.0, queue_s=3.0),  # 3 queued, 1 prefill
        CallRecord(step=1, started_s=15.0, latency_s=20.0, ttft_s=8.0, queue_s=6.0),  # 5 s tool before it
    ]
    done = TaskRecord("a", "t", "x", started_s=0.0, finished_s=40.0, calls=calls)
    failed = TaskRecord(
        "b", "t", "x", started_s=0.0, finished_s=9.0, calls=[CallRecord(0, 0.0, 1.0, error="x")]
    )
    split = time_split([done, failed])  # means over finished tasks only
    assert split is not None
    assert (split.first_queue_s, split.later_queue_s) == (3.0, 6.0)
    assert (split.prefill_s, split.decode_s, split.waits_s) == (3.0, 18.0, 10.0)
    assert 3.0 + 6.0 + 3.0 + 18.0 + split.waits_s == done.completion_time_s
    http = TaskRecord("c", "t", "x", started_s=0.0, finished_s=12.0, calls=[CallRecord(0, 0.0, 10.0, 4.0)])
    over_http = time_split([http])  # no queue figure: prefill is the time to first token
    assert over_http is not None and over_http.first_queue_s is None and over_http.prefill_s == 4.0
    # a non-streaming call over HTTP has no first token of its own: no prefill/decode split, not all prefill
    whole = TaskRecord("d", "t", "x", started_s=0.0, finished_s=12.0, calls=[CallRecord(0, 0.0, 10.0)])
    untimed = time_split([http, whole])
    assert untimed is not None and untimed.prefill_s is None and untimed.decode_s is None
    assert untimed.waits_s == 2.0
    assert time_split([failed]) is None


def test_isolated_split_adds_up_to_the_isolated_task_times() -> None:
    from loadtests.bench.metrics import isolated_split
    from loadtests.workloads.catalog import generate

    profile = get_profile("llama3-8b-h100")
    tasks = generate("swe", 5, seed=0)
    split = isolated_split(tasks, profile)
    assert split is not None and split.first_queue_s == split.later_queue_s == 0.0
    assert split.prefill_s is not None and split.decode_s is not None
    assert split.prefill_s > 0 and split.decode_s > split.prefill_s and split.waits_s > 0
    mean = sum(isolated_task_time_s(t, profile) for t in tasks) / len(tasks)
    assert split.prefill_s + split.decode_s + split.waits_s == pytest.approx(mean)
    assert isolated_split([], profile) is None


def test_a_whole_answers_latency_is_its_ttft_and_is_not_split_into_prefill_and_decode() -> None:
    """Over HTTP a non-streamed call's first token comes with its end (the agent client leaves its ttft_s
    None): the TTFT figures use its latency, and the time split says n/a rather than call it all prefill."""
    whole = [CallRecord(0, 0.0, 2.0, None, 100, 0, 10), CallRecord(1, 3.0, 1.0, None, 150, 100, 10)]
    records = [TaskRecord("w", "t", "x", 0.0, 5.0, whole)]
    tasks = [AgentTask("w", 100, 10, [Step(50, "t", 1.0, 10)], agent_type="x", tenant_id="t")]
    m = policy_metrics(records, tasks, {"w": 4.0})
    assert m.ttft_mean_s == pytest.approx(1.5)  # the two latencies
    split = time_split(records)
    assert split is not None and split.prefill_s is None and split.decode_s is None
    assert split.waits_s == pytest.approx(2.0)  # 5 s of task, 3 s of it in the two calls
    streamed = [CallRecord(0, 0.0, 2.0, 0.5, 100, 0, 10), CallRecord(1, 3.0, 1.0, 0.25, 150, 100, 10)]
    split = time_split([TaskRecord("s", "t", "x", 0.0, 5.0, streamed)])
    assert split is not None
    assert split.prefill_s == pytest.approx(0.75) and split.decode_s == pytest.approx(2.25)
