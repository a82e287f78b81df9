"""Round 4 of the decision-path cuts (docs/results/core-cost.md): each shortcut against the plain computation
it replaced, on random inputs."""

from __future__ import annotations

import bisect
import math
import random

import msgspec

from fairness import FairQueue, TenantsConfig
from fairness.stats import SECONDS_BUCKETS, Histogram, TenantLedger
from predictor import Predictor
from predictor.return_model import ReturnModel
from proxy.scheduler import RequestInfo, SchedulerCore, Usage, build_policy
from proxy.scheduler.plugin_params import PredictedTtlParams
from proxy.scheduler.plugins.predicted_ttl import PredictedTtlRetention
from proxy.scheduler.stealing import StealingSpec, steal_target
from proxy.scheduler.types import ReplicaView


def _plain_cumulative(values: list[float]) -> list[int]:
    """The histogram as it was kept before: every bucket at or above the value incremented."""
    counts = [0] * len(SECONDS_BUCKETS)
    for value in values:
        for k in range(bisect.bisect_left(SECONDS_BUCKETS, value), len(SECONDS_BUCKETS)):
            counts[k] += 1
    return counts


def test_histogram_counts_per_bucket_read_cumulative_as_before() -> None:
    rng = random.Random(4)
    h = Histogram()
    values: list[float] = []
    for n in range(3000):
        value = rng.choice((rng.lognormvariate(0.0, 3.0), *SECONDS_BUCKETS, 1e9, 0.0))
        h.observe(value)
        values.append(value)
        if n % 500 == 0:
            assert h.counts == _plain_cumulative(values)
    assert h.counts == _plain_cumulative(values)
    assert h.count == len(values)
    total = 0.0  # the same additions in the same order (not sum(): Python 3.12's compensates)
    for value in values:
        total += value
    assert h.total == total


def test_ledger_first_token_meets_slo_as_the_config_says() -> None:
    config = msgspec.convert({"tenants": {"chat": {"slo_class": "interactive"}}}, TenantsConfig)
    target = config.slo("chat").ttft_s
    assert target is not None
    ledger = TenantLedger(config)
    for ttft in (target / 2, target * 2, target, target / 3):
        ledger.first_token("chat", ttft)
        ledger.first_token("batch", ttft)
    chat, batch = ledger.records["chat"], ledger.records["batch"]
    assert (chat.ttft_slo_calls, chat.ttft_slo_met) == (4, 3)
    assert chat.ttft_slo_attainment == 0.75
    assert config.slo("batch").ttft_s is None and batch.ttft_slo_calls == 0
    assert batch.ttft.count == 4 and batch.ttft.counts == chat.ttft.counts


def _plain_answer(p: PredictedTtlParams, model: ReturnModel) -> tuple[float | None, int | None]:
    """The plugin's `_answer` as it was written before it moved to proxy/scheduler/ttl_answers.py."""
    p_return = model.p_return()
    if p_return < p.min_return_probability:
        return None, None
    priority = None
    if p.priority_base_s is not None:
        next_use = model.quantile(0.5) / p_return
        level = 1 + math.floor(math.log2(max(next_use / p.priority_base_s, 1.0)))
        priority = min(level, p.priority_levels)
    return min(max(model.quantile(p.ttl_quantile), 1e-3), p.max_ttl_s), priority


def _plain_release_after(p: PredictedTtlParams, predictor: Predictor, session_id: str, usage: Usage) -> bool:
    if p.release_answer_gap_s is None:
        return False
    got = predictor.return_model(session_id)
    if got is None or got[1] == "prior":
        return False
    model = got[0]
    if model.p_return() < p.min_return_probability:
        return True
    median_gap = model.quantile(0.5)
    if p.long_gap_s is not None and median_gap > p.long_gap_s:
        return True
    return usage.finish_reason == "stop" and not usage.tool_names and median_gap > p.release_answer_gap_s


def test_compiled_retention_answers_equal_the_plain_plugin_arithmetic() -> None:
    rng = random.Random(12)
    for params in (PredictedTtlParams(), PredictedTtlParams(priority_base_s=None, long_gap_s=None)):
        predictor = Predictor()
        plugin = PredictedTtlRetention(params, rng)
        plugin.bind_predictor(predictor)
        assert plugin.predictor is predictor
        tools = ("bash", "edit", "bash", "ask", "")
        now, asked, released = 0.0, 0, 0
        for n in range(2500):
            sid = f"s{rng.randrange(5)}"
            now += rng.random()
            tool = rng.choice(tools)
            predictor.call_arrived(sid, "agent", now, 1000 + n)
            req = RequestInfo(request_id=f"r{n}", session_id=sid, arrived_at=now)
            ttl = plugin.retain_ttl_s(req, "r0")
            got = predictor.return_model_after_call(sid, max_gap_s=params.long_gap_s)
            want = (
                (params.cold_ttl_s, None)
                if got is None or got[1] == "prior"
                else _plain_answer(params, got[0])
            )
            assert (ttl, plugin.retain_priority(req, "r0")) == want
            asked += ttl is not None
            now += rng.choice((0.05, 1.0, 10.0))
            answered = tool == "ask"  # handed back to a person: no tool called
            usage = Usage(
                1000 + n,
                50,
                0,
                "stop" if answered else "tool_calls",
                (tool,) if tool and not answered else (),
            )
            predictor.call_finished(sid, now, 1000 + n, 50, usage.finish_reason, usage.tool_names)
            release = plugin.release_after(req, "r0", usage)
            assert release == _plain_release_after(params, predictor, sid, usage)
            released += release
            if tool == "ask":  # a person reads the answer: a long gap before the session's next call
                now += 120.0
        assert asked > 100 and 10 < released < 2400  # both branches were exercised


def test_a_lone_candidate_skips_scoring_and_still_goes_where_the_picker_sends_it() -> None:
    for preset in ("saga", "session-affinity", "prefix-load"):
        policy = build_policy(preset, seed=1)
        assert policy.picker.takes_lone_candidate
        lone = [ReplicaView("only", in_flight=3, kv_usage=0.9)]
        req = RequestInfo("r", "s", 0.0, prefix_hashes=(1, 2, 3))
        assert policy.route(req, lone) == "only"
    assert not build_policy("round-robin").picker.takes_lone_candidate  # it counts its turns
    assert not build_policy("least-request").picker.takes_lone_candidate  # it draws


def test_finish_and_session_end_hooks_are_those_plugins_implement() -> None:
    policy = build_policy("saga", seed=0)
    implementing = {type(p).__name__ for p in policy.plugins if "on_session_end" in type(p).__dict__}
    assert {type(h.__self__).__name__ for h in policy.session_end_hooks} == implementing
    assert "SessionAffinityScorer" in implementing
    core = SchedulerCore(["a", "b"], policy, lambda: 0.0)
    core.request_arrived(RequestInfo("r1", "s1", 0.0))
    core.request_finished("r1", Usage(10, 5))
    core._forget_session("s1")
    assert "s1" not in policy.plugins[0].bound  # type: ignore[attr-defined]


def test_stealing_scan_order_does_not_change_the_target() -> None:
    """The idle scan's conditions reordered (pure, no side effects): the same target as the plain scan."""
    rng = random.Random(5)
    spec = StealingSpec(rebalance_above=None)
    for _ in range(500):
        replicas = [
            ReplicaView(
                f"r{i}",
                healthy=rng.random() > 0.1,
                in_flight=rng.choice((0, 0, 1, 3)),
                queued=rng.choice((0, 0, 0, 2)),
                waiting=rng.choice((0, 0, 1)),
                running=rng.randrange(8),
            )
            for i in range(12)
        ]
        bound = replicas[0]
        bound.waiting = rng.randrange(1, 50)
        room = frozenset(r.replica_id for r in replicas if rng.random() > 0.3)
        req = RequestInfo("r", "s", 0.0, prompt_tokens=rng.choice((100, 2000, 30000)))
        got = steal_target(spec, req, bound, replicas, lambda r, room=room: r.replica_id in room)
        best = None
        for r in replicas:
            if (
                r is bound
                or not r.healthy
                or r.in_flight
                or r.queued
                or r.waiting
                or r.replica_id not in room
            ):
                continue
            if best is None or r.running < best.running:
                best = r
        backlog = bound.waiting + bound.queued
        congested = backlog * spec.call_s / max(
            1, bound.running
        ) > req.prompt_tokens * spec.prefill_s_per_token * (1.0 + req.prompt_tokens / spec.attention_tokens)
        assert got == (best.replica_id if best is not None and congested and bound.healthy else None)


def test_one_tenant_backlogged_goes_next_as_the_minimum_would() -> None:
    q: FairQueue[str] = FairQueue("afs", age_bound_s=None)
    for n in range(5):
        q.push(f"k{n}", f"i{n}", tenant="t", cost=1.0, remaining=float(5 - n), now=0.0)
    q.remove("k4")  # the least remaining, removed: skipped
    assert q.next_tenant() == "t"
    assert [q.pop(0.0) for _ in range(4)] == ["i3", "i2", "i1", "i0"]
    assert q.next_tenant() is None
