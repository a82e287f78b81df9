"""Replicas of different speed: measured from the calls' times at equal load (replica_speed.py), weighed in
the load score and moving workflows bound to a slower replica to a faster one (stealing.py `speed_target`)."""

from __future__ import annotations

import math

import msgspec
import pytest

from proxy.scheduler import ConfigError, Dispatch, ReplicaStats, SchedulerCore, Usage, build_policy
from proxy.scheduler.replica_speed import ReplicaSpeeds
from proxy.scheduler.scoring import least_request_scores
from proxy.scheduler.stealing import StealingSpec, speed_target, steal_target
from proxy.scheduler.types import ReplicaView
from tests.clocks import Clock
from tests.scheduler.test_saga_policy import call, make_core, only_dispatch, saga_spec


def fill(speeds: ReplicaSpeeds, replica: str, load: int, s_per_token: float, n: int = 8) -> bool:
    refreshed = False
    for _ in range(n):
        refreshed |= speeds.observe(replica, load, s_per_token * 100, 100, now=0.0)
    return refreshed


def test_a_replica_slower_at_the_same_load_is_measured_that_many_times_slower() -> None:
    speeds = ReplicaSpeeds(above=1.5)
    fill(speeds, "fast", 3, 0.01)
    assert fill(speeds, "slow", 3, 0.03)  # the 16th sample refreshes
    assert speeds.slowness == {"slow": pytest.approx(3.0)}


def test_replicas_within_the_dead_band_are_all_counted_as_fast() -> None:
    speeds = ReplicaSpeeds(above=1.5)
    fill(speeds, "a", 3, 0.010)
    fill(speeds, "b", 3, 0.014)
    assert speeds.slowness == {}


def test_a_busier_replica_is_not_taken_for_a_slower_one() -> None:
    # one kind of replica: calls at load 20 take twice as long as at load 2, and each replica met only one
    # of those loads: no bucket in common, nothing compared
    speeds = ReplicaSpeeds(above=1.5)
    fill(speeds, "busy", 20, 0.02)
    fill(speeds, "light", 2, 0.01)
    assert speeds.slowness == {}
    # calls at a load both met compare alike: still one speed
    fill(speeds, "busy", 2, 0.01)
    fill(speeds, "light", 20, 0.02)
    assert speeds.slowness == {}


def test_alike_replicas_serving_calls_of_different_shapes_are_not_taken_for_different_speeds() -> None:
    """Found by the fifty-third session's soak: one replica serving a session of long prompts and short
    answers, its alike neighbour one of short prompts and long answers, measured 2.4-9.3x apart (a call's time
    holds its prefill, which a time per completion token counts the more the fewer tokens it answers), and
    workflows left the first for five minutes. Calls are compared only with calls of their shape."""
    speeds = ReplicaSpeeds(above=1.5)
    for _ in range(8):
        # 8,000 prompt tokens prefilled at 20,000 a second, then 16 tokens at 20 ms each; 256 tokens at 20 ms
        speeds.observe("prefills", 1, 0.4 + 16 * 0.02, 16, now=0.0, prefilled=8_000)
        speeds.observe("decodes", 1, 0.01 + 256 * 0.02, 256, now=0.0, prefilled=200)
    assert speeds.slowness == {}
    # a replica that is slower at calls of one shape is still measured, shape by shape
    for _ in range(8):
        speeds.observe("prefills", 1, 3 * (0.01 + 256 * 0.02), 256, now=0.0, prefilled=200)
    assert speeds.slowness == {"prefills": pytest.approx(3.0)}
    # a miscounted prompt (10^18 tokens) falls in the last shape: nothing breaks, nothing else is compared
    for _ in range(8):
        speeds.observe("prefills", 1, 1.0, 100, now=0.0, prefilled=10**18)
    assert speeds.slowness == {"prefills": pytest.approx(3.0)}


@pytest.mark.parametrize("seconds", [math.nan, math.inf, -1.0, 0.0])
def test_unusable_call_times_short_answers_and_impossible_counts_teach_nothing(seconds: float) -> None:
    speeds = ReplicaSpeeds(above=1.5)
    for _ in range(32):
        speeds.observe("r", 1, seconds, 100, now=0.0)
        speeds.observe("r", 1, 5.0, 15, now=0.0)  # below the token floor: mostly prefill and queue
        speeds.observe("r", 1, 1.0, 10**12, now=0.0)  # usage that miscounts: no engine decodes that fast
    assert speeds.samples.get("r", {}) == {}


def test_a_forgotten_replica_leaves_nothing_behind() -> None:
    speeds = ReplicaSpeeds(above=1.5)
    fill(speeds, "fast", 3, 0.01)
    fill(speeds, "slow", 3, 0.03)
    speeds.forget("slow")
    assert "slow" not in speeds.samples and "slow" not in speeds.slowness


def test_slowness_one_leaves_the_load_score_as_it_was_and_weighs_it_otherwise() -> None:
    views = [ReplicaView("a", in_flight=3), ReplicaView("b", in_flight=1, waiting=1)]
    assert least_request_scores(views) == [1.0 / 4.0, 1.0 / 3.0]
    views[1].slowness = 2.0
    assert least_request_scores(views) == [1.0 / 4.0, 1.0 / 6.0]


def test_speed_target_moves_only_to_a_faster_replica_less_loaded_by_weight() -> None:
    slow = ReplicaView("slow", in_flight=4, slowness=3.0)
    fast = ReplicaView("fast", in_flight=10)
    mid = ReplicaView("mid", in_flight=0, slowness=2.5)
    room = lambda r: True  # noqa: E731
    # (1 + 10) x 1 < (1 + 4) x 3; mid is not 1.5 times faster than slow
    assert speed_target(slow, [slow, fast, mid], room, 1.5) == "fast"
    fast.in_flight = 14  # 15 >= 15: not less loaded
    assert speed_target(slow, [slow, fast, mid], room, 1.5) is None
    fast.in_flight = 0
    assert speed_target(slow, [slow, fast], lambda r: False, 1.5) is None  # no room for the workflow
    assert speed_target(fast, [slow, fast], room, 1.5) is None  # never from the fastest
    fast.healthy = False
    assert speed_target(slow, [slow, fast], room, 1.5) is None


def test_speed_target_weighs_the_workflows_bound_between_calls_too() -> None:
    # calls in flight miss the workflows in a tool call: the KV reserved for them counts them
    slow = ReplicaView("slow", in_flight=1, slowness=2.0, reserved_tokens=20_000)
    fast = ReplicaView("fast", in_flight=0, reserved_tokens=35_000)
    room = lambda r: True  # noqa: E731
    assert speed_target(slow, [slow, fast], room, 1.5, footprint=5_000) is None  # 40,000 >= 40,000
    fast.reserved_tokens = 30_000
    assert speed_target(slow, [slow, fast], room, 1.5, footprint=5_000) == "fast"


def test_an_idle_replica_slower_than_the_bound_one_steals_nothing() -> None:
    spec = StealingSpec()
    bound = ReplicaView("fast", waiting=6, running=2)  # a backlog worth moving for
    idle = ReplicaView("slow")
    req = call("a", prompt_tokens=2_000)
    room = lambda r: True  # noqa: E731
    assert steal_target(spec, req, bound, [bound, idle], room) == "slow"
    idle.slowness = 3.0  # the speed move would take the workflow back at its next call
    assert steal_target(spec, req, bound, [bound, idle], room) is None
    bound.slowness = 3.0  # as slow as each other: stealing as before
    assert steal_target(spec, req, bound, [bound, idle], room) == "slow"


def run_round(
    core: SchedulerCore, clock: Clock, sessions: list[str], prompt: int, s_per_token: dict[str, float]
) -> dict[str, str]:
    """Each session sends a call at once, ending after 100 tokens at its replica's speed. Where each went."""
    sent: list[tuple[str, Dispatch, int]] = []
    for s in sessions:
        req = call(s, prompt_tokens=prompt)
        sent.append((s, only_dispatch(core.request_arrived(req)), prompt))
    start = clock.now
    where = {}
    for s, d, p in sorted(sent, key=lambda x: s_per_token[x[1].replica_id]):
        clock.now = max(clock.now, start + 100 * s_per_token[d.replica_id])
        core.request_finished(d.request_id, Usage(p, 100, finish_reason="tool_calls"))
        where[s] = d.replica_id
    clock.now += 0.5  # the tool call
    return where


def test_workflows_bound_to_a_three_times_slower_replica_move_to_the_faster_one_and_not_back() -> None:
    core, clock = make_core(replicas=2)
    sessions = [f"agent{i}" for i in range(8)]
    speed = {"r0": 0.01, "r1": 0.03}
    first = run_round(core, clock, sessions, 1_000, speed)
    assert sorted(first.values()).count("r1") == 4  # a burst splits by calls in flight: no speed known yet
    # bound; at the second round each replica has 4 calls measured at 2-3 in flight
    assert run_round(core, clock, sessions, 1_200, speed) == first and core.moves == 0
    assert core.replicas["r1"].slowness == pytest.approx(3.0, rel=0.05)
    assert core.replicas["r0"].slowness == 1.0
    where = run_round(core, clock, sessions, 1_400, speed)
    on_slow = [s for s in sessions if where[s] == "r1"]
    # weighed by speed: the slow replica keeps about a quarter of the work
    assert 1 <= len(on_slow) <= 2 and core.moves == 4 - len(on_slow)
    assert core.admission is not None
    assert all(core.admission.workflows[s].replica_id == where[s] for s in sessions)  # re-bound
    moves = core.moves
    for prompt in (1_600, 1_800):
        assert run_round(core, clock, sessions, prompt, speed) == where  # settled: nothing moves back
    assert core.moves == moves


def test_a_homogeneous_fleet_under_uneven_load_moves_nothing() -> None:
    # one kind of replica whose calls take longer the more run at once (as vLLM's steps do)
    core, clock = make_core(replicas=2)
    sessions = [f"agent{i}" for i in range(8)]
    for n in range(5):
        sent = []
        for s in sessions:
            req = call(s, prompt_tokens=1_000 + 200 * n)
            sent.append(only_dispatch(core.request_arrived(req)))
        start = clock.now
        for d in sent:
            load = core.replicas[d.replica_id].in_flight
            clock.now = max(clock.now, start + 100 * 0.01 * (1 + load / 4))
            core.request_finished(d.request_id, Usage(1_000, 100, finish_reason="tool_calls"))
        clock.now += 0.5
    assert all(v.slowness == 1.0 for v in core.replicas.values()) and core.moves == 0


def test_slower_above_must_be_past_one_and_finite_and_none_measures_nothing() -> None:
    for bad in (1.0, 0.5, math.inf, math.nan):
        with pytest.raises(ConfigError, match=r"stealing\.slower_above"):
            build_policy(saga_spec(stealing=StealingSpec(slower_above=bad)))
    off = msgspec.structs.replace(saga_spec(), stealing=StealingSpec(rebalance_above=1.0, slower_above=None))
    core, _ = make_core(spec=off)
    assert core.speeds is None
    core, _ = make_core()
    assert core.speeds is not None  # the preset measures


def test_calls_on_a_replica_with_an_engine_queue_say_nothing_of_its_speed() -> None:
    # calls that wait for KV (or were preempted) take a time of the replica's load: homogeneous replicas
    # under KV pressure measured 1.5-2x apart, and moving work off the slowed one cost 20% in the DES
    core, clock = make_core(replicas=2)
    core.replica_stats(ReplicaStats("r1", waiting=3))
    sessions = [f"agent{i}" for i in range(8)]
    for prompt in (1_000, 1_100, 1_200, 1_300, 1_400):
        run_round(core, clock, sessions, prompt, {"r0": 0.01, "r1": 0.03})
    assert core.speeds is not None and "r1" not in core.speeds.samples
    assert core.replicas["r1"].slowness == 1.0 and core.moves == 0


def test_samples_older_than_the_age_bound_are_dropped() -> None:
    # a replica that became slower without restarting: its fast old samples no longer set its low quantile
    speeds = ReplicaSpeeds(above=1.5)
    for _ in range(8):
        speeds.observe("a", 3, 1.0, 100, now=0.0)
        speeds.observe("b", 3, 1.0, 100, now=0.0)
    assert speeds.slowness == {}
    for _ in range(8):
        speeds.observe("a", 3, 1.0, 100, now=400.0)
        speeds.observe("b", 3, 3.0, 100, now=400.0)
    assert speeds.slowness == {"b": pytest.approx(3.0)}
    assert all(len(kept) == 8 for buckets in speeds.samples.values() for kept in buckets.values())


def test_a_replica_found_down_is_measured_afresh() -> None:
    # it may come back restarted on other hardware (a review: restarted slower, it kept its fast samples)
    core, clock = make_core(replicas=2)
    sessions = [f"agent{i}" for i in range(8)]
    for prompt in (1_000, 1_200):
        run_round(core, clock, sessions, prompt, {"r0": 0.01, "r1": 0.03})
    assert core.speeds is not None and core.replicas["r1"].slowness > 1.5
    core.replica_stats(ReplicaStats("r1", healthy=False))
    assert core.replicas["r1"].slowness == 1.0 and "r1" not in core.speeds.samples
    core.replica_stats(ReplicaStats("r1", healthy=True))
    assert core.replicas["r1"].slowness == 1.0


def test_calls_asking_for_several_choices_say_nothing_of_a_replicas_speed() -> None:
    """A call asking for `n` choices reports the tokens of all of them, decoded side by side: measured per
    token, the alike replica serving an agent that samples four choices a call looked 4x faster than its
    neighbour, which was then counted slower and had its workflows moved."""
    core, clock = make_core(replicas=2)
    for round_ in range(6):
        sent = []
        for i in range(8):
            replica, choices = ("r0", 4) if i < 4 else ("r1", 1)
            req = msgspec.structs.replace(
                call(f"agent{i}", prompt_tokens=1_000 + 100 * round_), pinned_replica=replica, choices=choices
            )
            sent.append((only_dispatch(core.request_arrived(req)), choices))
        clock.now += 100 * 0.01  # every call: 100 tokens a choice at 10 ms each, side by side
        for dispatch, choices in sent:
            core.request_finished(
                dispatch.request_id, Usage(1_000, 100 * choices, finish_reason="tool_calls")
            )
        clock.now += 0.5
    assert core.speeds is not None and "r0" not in core.speeds.samples and core.speeds.samples["r1"]
    assert core.replicas["r1"].slowness == 1.0 and core.moves == 0
