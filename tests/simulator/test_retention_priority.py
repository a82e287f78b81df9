"""Retention contract v2 in the engine, in simulated time: priorities decide who may break a retention, and
the queue always progresses (docs/retention-api.md)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.engine import Engine, EngineRequest
from simulator.request_state import RequestState
from tests.simulator.test_retention import POOL, Clock, tokens


def req(
    rid: str,
    prompt: list[int],
    max_tokens: int = 8,
    *,
    priority: int = 0,
    session: str | None = None,
    ttl: float | None = None,
    retain_priority: int | None = None,
) -> EngineRequest:
    return EngineRequest(
        request_id=rid,
        prompt_token_ids=prompt,
        max_tokens=max_tokens,
        ignore_eos=True,
        priority=priority,
        session_id=session,
        retain_ttl_s=ttl,
        retain_priority=retain_priority,
    )


class NoShortcutEngine(Engine):
    """Without the blocked-head shortcut (a subclass: a compiled Engine's methods cannot be replaced on an
    instance)."""

    def _still_blocked(self, seq: RequestState, budget: int) -> bool:
        return False


def engine(*, shortcut: bool = True, **kw: float) -> Engine:
    kind = Engine if shortcut else NoShortcutEngine
    return kind(POOL, scheduling_policy="priority", max_retained_fraction=1.0, **kw)


def retained(engine: Engine) -> list[str]:
    return [info.session_id for info in engine.retention.snapshot(0.0)]


def with_hog_running(clock: Clock, blocks: int = 30, decode: int = 200) -> None:
    """A request holding `blocks` blocks that decodes for `decode` steps, admitted now."""
    clock.submit(req("hog", tokens(blocks * 16 - 8, 99), decode))
    clock.step()


@pytest.mark.parametrize("new_priority", [0, 3])
def test_a_new_request_no_more_important_waits_for_running_work_rather_than_break_a_retention(
    new_priority: int,
) -> None:
    eng = engine()
    clock = Clock(eng)
    clock.run(req("a", tokens(320, 1), 1, session="a", ttl=600.0))  # 20 blocks retained, priority 0
    with_hog_running(clock)  # 30 blocks: 14 free
    clock.submit(req("new", tokens(320, 2), 4, priority=new_priority))  # needs 20
    for _ in range(50):
        clock.step()
    assert "new" not in clock.outputs and retained(eng) == ["a"]  # waits; v1 would have released "a"
    clock.drain()
    assert clock.finished_at["new"] > clock.finished_at["hog"]
    assert retained(eng) == ["a"] and eng.stats().retentions_dropped_total == 0
    assert eng.num_preemptions == 0


def test_a_more_important_waiting_request_breaks_a_less_important_retention_at_once() -> None:
    eng = engine()
    clock = Clock(eng)
    clock.run(req("a", tokens(320, 1), 1, session="a", ttl=600.0))
    with_hog_running(clock)
    clock.submit(req("urgent", tokens(320, 2), 4, priority=-1))
    clock.step()
    assert "urgent" in clock.outputs and retained(eng) == []
    assert eng.stats().retentions_dropped_total == 1


def test_the_retention_priority_defaults_to_the_requests_and_can_be_set_apart() -> None:
    eng = engine()
    clock = Clock(eng)
    clock.run(req("a", tokens(160, 1), 1, priority=3, session="a", ttl=600.0))
    clock.run(req("b", tokens(160, 2), 1, priority=3, session="b", ttl=600.0, retain_priority=-2))
    priorities = {i.session_id: i.priority for i in eng.retention.snapshot(clock.now)}
    assert priorities == {"a": 3, "b": -2}


def test_a_waiting_request_breaks_only_less_important_ones_least_important_then_oldest_first() -> None:
    eng = engine()
    clock = Clock(eng)
    for i, (session, prio) in enumerate((("p1-old", 1), ("p2", 2), ("p0", 0), ("p1-new", 1))):
        clock.run(req(session, tokens(160, 10 + i), 1, session=session, ttl=600.0, retain_priority=prio))
    with_hog_running(clock, blocks=20)  # 64 - 40 - 20 = 4 free
    clock.submit(req("mid", tokens(400, 7), 4, priority=0))  # 25 blocks: needs 21 more
    clock.step()
    # p2 (10), then p1-old (10), then p1-new (10) go: 34 free; p0 is not less important than "mid"
    assert "mid" in clock.outputs and retained(eng) == ["p0"]
    assert eng.stats().retentions_dropped_total == 3


def test_a_waiting_request_that_could_not_fit_even_after_breaking_its_lessers_breaks_none() -> None:
    eng = engine()
    clock = Clock(eng)
    clock.run(req("lo", tokens(160, 1), 1, session="lo", ttl=600.0, retain_priority=5))  # 10 blocks
    clock.run(req("hi", tokens(320, 2), 1, session="hi", ttl=600.0, retain_priority=-5))  # 20 blocks
    with_hog_running(clock, blocks=30)  # 4 free
    clock.submit(req("mid", tokens(400, 3), 4))  # 25 blocks: only 14 reachable by breaking "lo"
    clock.step()
    assert "mid" not in clock.outputs and sorted(retained(eng)) == ["hi", "lo"]


def test_with_nothing_running_the_head_breaks_even_more_important_retentions() -> None:
    eng = engine()
    clock = Clock(eng)
    for i, session in enumerate("abc"):
        clock.run(req(session, tokens(320, i), 1, session=session, ttl=600.0, retain_priority=-10 + i))
    assert eng.pool.num_free == 4
    clock.run(req("low", tokens(600, 7), 8, priority=10))  # 38 blocks: two retentions must go
    assert retained(eng) == ["a"]  # the least important (c, then b) went first
    assert eng.stats().retentions_dropped_total == 2


def test_a_running_request_breaks_the_least_important_retention_first_and_preempts_nobody() -> None:
    eng = engine()
    clock = Clock(eng)
    clock.submit(req("long", tokens(16, 1), 400, priority=9))  # grows from 1 block to 26
    clock.step()
    for i, session in enumerate("abc"):  # 20 blocks each; b least important, then a, then c
        prio = {"a": 0, "b": 4, "c": -4}[session]
        clock.submit(req(session, tokens(320, 10 + i), 1, priority=prio, session=session, ttl=600.0))
    clock.drain()
    assert eng.num_preemptions == 0 and len(clock.outputs["long"]) == 400
    assert retained(eng) == ["c"]


def test_the_cap_never_drops_a_more_important_retention_for_a_new_one() -> None:
    eng = Engine(POOL, scheduling_policy="priority", max_retained_fraction=0.25)  # 16 blocks
    clock = Clock(eng)
    clock.run(req("vip", tokens(160, 1), 1, session="vip", ttl=600.0, retain_priority=-1))  # 10 blocks
    clock.run(req("new", tokens(160, 2), 1, session="new", ttl=600.0))  # 10 more, less important
    infos = {i.session_id: i.num_blocks for i in eng.retention.snapshot(clock.now)}
    assert infos == {"vip": 10, "new": 6}  # cut to its leading blocks that fit
    clock.run(req("vip2", tokens(160, 3), 1, session="vip2", ttl=600.0, retain_priority=-1))
    infos = {i.session_id: i.num_blocks for i in eng.retention.snapshot(clock.now)}
    assert infos == {"vip2": 10}  # equals and lessers go least important, then oldest, first


def test_next_expiry_tracks_rearming_and_release() -> None:
    eng = engine()
    clock = Clock(eng)
    assert eng.retention.next_expiry() is None
    clock.run(req("a", tokens(160, 1), 1, session="a", ttl=5.0))
    t_a = clock.finished_at["a"]
    clock.run(req("b", tokens(160, 2), 1, session="b", ttl=50.0))
    t_b = clock.finished_at["b"]
    assert eng.retention.next_expiry() == t_a + 5.0
    eng.retention.extend("a", 100.0, t_b)
    assert eng.retention.next_expiry() == t_b + 50.0
    eng.retention.release("b")
    assert eng.retention.next_expiry() == t_b + 100.0
    assert eng.expire_retentions(t_b + 99.0) == 0 and eng.expire_retentions(t_b + 100.0) == 1
    assert eng.retention.next_expiry() is None


def test_extend_can_change_the_priority_and_unblocks_a_waiting_request() -> None:
    eng = engine()
    clock = Clock(eng)
    clock.run(req("a", tokens(320, 1), 1, session="a", ttl=600.0))
    with_hog_running(clock)
    clock.submit(req("new", tokens(320, 2), 4))
    clock.step()
    assert "new" not in clock.outputs
    eng.retention.extend("a", 600.0, clock.now, priority=1)  # now less important than "new"
    clock.step()
    assert "new" in clock.outputs and retained(eng) == []


# ---- properties -----------------------------------------------------------------------------------------

_EVENT = st.tuples(
    st.sampled_from(["add", "add", "add", "wait", "extend", "release", "abort"]),
    st.integers(0, 5),  # session
    st.integers(-2, 2),  # request priority
    st.one_of(st.none(), st.integers(-3, 3)),  # retention priority
    st.one_of(st.none(), st.floats(0.001, 2.0)),  # retain TTL (s)
    st.integers(1, 40),  # size knob
)


def run_events(events: list[tuple[str, int, int, int | None, float | None, int]], shortcut: bool) -> Engine:
    """Play `events` against an engine, stepping between them; return it after everything finished."""
    kind = Engine if shortcut else NoShortcutEngine
    eng = kind(POOL, scheduling_policy="priority", max_retained_fraction=0.75, max_retain_ttl_s=1.0)
    clock = Clock(eng)
    prefixes = [tokens(192, 100 + k) for k in range(3)]
    submitted: list[str] = []
    for n, (op, session, prio, retain_prio, ttl, size) in enumerate(events):
        sid = f"s{session}"
        if op == "add":
            rid = f"r{n}"
            prompt = prefixes[session % 3] + tokens(size * 12, n)
            clock.submit(req(rid, prompt, size % 16 + 1, priority=prio, session=sid, ttl=ttl,
                             retain_priority=retain_prio))  # fmt: skip
            submitted.append(rid)
        elif op == "wait":
            clock.now += size / 40
        elif op == "extend" and ttl is not None:
            eng.retention.extend(sid, ttl, clock.now, retain_prio)
        elif op == "release":
            eng.retention.release(sid)
        elif op == "abort" and submitted and eng.abort(submitted[-1]):
            submitted.pop()
        for _ in range(size % 5):
            if eng.has_unfinished():
                clock.step()
        assert eng.retention.num_blocks <= eng.retention.max_blocks
    for _ in range(20_000):  # bounded: a deadlock fails here instead of hanging
        if not eng.has_unfinished():
            break
        clock.step()
    assert not eng.has_unfinished(), "the engine deadlocked"
    assert set(submitted) <= set(clock.finished_at), "a submitted request never finished"
    return eng


@settings(max_examples=60, deadline=None)
@given(events=st.lists(_EVENT, min_size=5, max_size=60))
def test_random_priorities_ttls_and_arrivals_never_deadlock_and_keep_the_pool_consistent(
    events: list[tuple[str, int, int, int | None, float | None, int]],
) -> None:
    eng = run_events(events, shortcut=True)
    eng.pool.check_invariants(eng.held_blocks())  # Clock checks after every step too
    assert eng.reset_prefix_cache() is True
    assert eng.pool.num_free == eng.pool.num_blocks and eng.retention.num_sessions == 0


@settings(max_examples=30, deadline=None)
@given(events=st.lists(_EVENT, min_size=5, max_size=40))
def test_the_blocked_head_shortcut_is_exact_under_priorities(
    events: list[tuple[str, int, int, int | None, float | None, int]],
) -> None:
    fast, slow = run_events(events, shortcut=True), run_events(events, shortcut=False)
    assert fast.stats() == slow.stats()
    assert fast.retention.snapshot(0.0) == slow.retention.snapshot(0.0)


def test_a_flood_of_less_important_work_cannot_break_a_protected_session() -> None:
    eng = engine()
    clock = Clock(eng)
    prompt = tokens(320, 1)
    answer = clock.run(req("turn-0", prompt, 40, priority=-1, session="agent", ttl=600.0))
    rng = random.Random(3)
    for i in range(12):  # overlapping floods of new, less important work
        # 1 token in the last block and 8 out: a running flood request never needs another block (a running
        # request that does may break any retention before anything is preempted)
        size = rng.randrange(12, 30) * 16 - 15
        clock.submit(req(f"f{i}", tokens(size, 500 + i), 8, priority=1))
        clock.step()
    clock.drain()
    assert "agent" in eng.retention
    clock.run(req("turn-1", prompt + answer, 4, priority=-1, session="agent"))
    assert clock.cached_tokens("turn-1") == 22 * 16


@pytest.mark.parametrize("shortcut", [True, False])
def test_a_head_blocked_only_by_more_important_retentions_is_let_in_once_running_work_ends(
    shortcut: bool,
) -> None:
    eng = engine(shortcut=shortcut)
    clock = Clock(eng)
    clock.run(req("a", tokens(640, 1), 1, priority=-5, session="a", ttl=600.0))  # 40 blocks
    with_hog_running(clock, blocks=20, decode=30)  # 4 free
    clock.submit(req("low", tokens(320, 2), 4, priority=5))  # 20 blocks
    clock.drain()
    # when hog ended its 20 blocks came free: "low" fit without breaking anything
    assert "low" in clock.finished_at and retained(eng) == ["a"]
