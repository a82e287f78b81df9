"""KV retention in the engine, in simulated time: survival of a flood, TTLs, caps, takeover, no deadlock."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.cost_model import Profile
from simulator.engine import Engine, EngineRequest, InvalidRequestError, RequestOutput
from simulator.retention import RetentionTable

# 64 blocks of 16 tokens; steps take 1 ms + 0.01 ms per token, so times are exact sums
POOL = Profile(
    name="retention-test",
    source="tests",
    block_size=16,
    kv_capacity_tokens=64 * 16,
    max_num_batched_tokens=2048,
    max_num_seqs=16,
    max_model_len=1024,
    step_fixed_ms=1.0,
    prefill_token_ms=0.01,
    linear_knee_tokens=0,
    prefill_attention_ms=0.0,
    decode_ms_per_kctx=0.0,
)


def tokens(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(256, 32000) for _ in range(n)]


def req(
    rid: str, prompt: list[int], max_tokens: int = 8, *, session: str | None = None, ttl: float | None = None
) -> EngineRequest:
    return EngineRequest(
        request_id=rid,
        prompt_token_ids=prompt,
        max_tokens=max_tokens,
        ignore_eos=True,
        session_id=session,
        retain_ttl_s=ttl,
    )


class Clock:
    """Steps an engine in simulated time, checking the pool (requests' and retentions' references) after
    every step; `finished_at[rid]` is the simulated time a request's last token was out."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.now = 0.0
        self.outputs: dict[str, list[RequestOutput]] = {}
        self.finished_at: dict[str, float] = {}

    def submit(self, request: EngineRequest) -> None:
        self.engine.add_request(request, self.now)

    def step(self) -> None:
        result = self.engine.step(self.now)
        self.now = result.end
        for out in result.outputs:
            self.outputs.setdefault(out.request_id, []).append(out)
            if out.finish_reason is not None:
                self.finished_at[out.request_id] = self.now
        self.engine.pool.check_invariants(self.engine.held_blocks())

    def drain(self) -> None:
        while self.engine.has_unfinished():
            self.step()

    def run(self, request: EngineRequest) -> list[int]:
        """Run one request to completion; its generated token ids."""
        self.submit(request)
        self.drain()
        return [t for out in self.outputs[request.request_id] for t in out.new_token_ids]

    def cached_tokens(self, rid: str) -> int:
        usage = self.outputs[rid][-1].usage
        assert usage is not None
        return usage.cached_tokens


def flood(clock: Clock, n: int = 10, size: int = 480) -> None:
    """Other traffic whose blocks, together, need the whole pool several times over."""
    for i in range(n):
        clock.run(req(f"flood-{i}", tokens(size, 1000 + i)))


def next_turn_cached(ttl: float | None) -> int:
    clock = Clock(Engine(POOL))
    prompt = tokens(320, 1)  # 20 full blocks
    answer = clock.run(req("turn-0", prompt, 40, session="agent", ttl=ttl))
    flood(clock)
    clock.run(req("turn-1", prompt + answer + tokens(100, 2), session="agent"))
    return clock.cached_tokens("turn-1")


def test_a_retained_session_survives_a_flood_that_evicts_it_without_retention() -> None:
    # 320 prompt + 39 computed output tokens = 22 full blocks, prompt and output both retained
    assert next_turn_cached(ttl=60.0) == 22 * 16
    assert next_turn_cached(ttl=None) == 0


def test_retention_starts_when_the_request_ends_and_expires_exactly_after_its_ttl() -> None:
    engine = Engine(POOL)
    clock = Clock(engine)
    clock.run(req("r", tokens(320, 1), session="s", ttl=5.0))
    end = clock.finished_at["r"]
    (info,) = engine.retention.snapshot(end)
    assert (info.session_id, info.num_blocks, info.num_tokens) == ("s", 20, 320)
    assert info.retained_at == end and info.expires_at == end + 5.0 and info.ttl_left_s == 5.0
    assert not engine.has_unfinished()  # retentions are not pending work
    assert engine.expire_retentions(end + 4.999) == 0 and "s" in engine.retention
    assert engine.stats().num_retained_blocks == 20 and engine.stats().num_retained_sessions == 1
    assert engine.expire_retentions(end + 5.0) == 1
    assert engine.stats().num_retained_blocks == 0 and engine.pool.num_free == engine.pool.num_blocks
    assert engine.stats().retentions_dropped_total == 0  # expiry is not an early drop


def test_step_expires_retentions_at_its_start_so_a_later_flood_evicts_them() -> None:
    clock = Clock(Engine(POOL))
    prompt = tokens(320, 1)
    answer = clock.run(req("turn-0", prompt, 40, session="agent", ttl=1.0))
    clock.now += 1.0  # an idle second: the next step starts after the TTL
    flood(clock)
    assert "agent" not in clock.engine.retention
    clock.run(req("turn-1", prompt + answer, session="agent"))
    assert clock.cached_tokens("turn-1") == 0


def test_the_next_request_takes_over_and_the_retention_is_dropped_only_once_it_runs() -> None:
    engine = Engine(POOL)
    clock = Clock(engine)
    prompt = tokens(320, 1)
    answer = clock.run(req("turn-0", prompt, 40, session="agent", ttl=60.0))
    retained = engine.retention.held()[0]
    clock.submit(req("turn-1", prompt + answer + tokens(64, 2), 4, session="agent", ttl=60.0))
    assert "agent" in engine.retention  # still waiting: the retention holds
    clock.step()
    assert "agent" not in engine.retention  # running: its prefix hit holds the same blocks now
    assert all(engine.pool.ref_count(b) == 1 for b in retained)
    clock.drain()
    assert clock.cached_tokens("turn-1") == 22 * 16
    (info,) = engine.retention.snapshot(clock.now)
    assert info.num_blocks == (320 + 40 + 64 + 3) // 16  # the new turn's chain, prompt and output


def test_extend_rearms_and_makes_newest_release_drops_and_the_ttl_is_capped() -> None:
    engine = Engine(POOL, max_retain_ttl_s=100.0)
    clock = Clock(engine)
    clock.run(req("a", tokens(160, 1), session="a", ttl=1000.0))
    end = clock.finished_at["a"]
    (info,) = engine.retention.snapshot(end)
    assert info.expires_at == end + 100.0 and info.ttl_clamped
    clock.run(req("b", tokens(160, 2), session="b", ttl=50.0))
    extended = engine.retention.extend("a", 30.0, clock.now)
    assert extended is not None and extended.expires_at == clock.now + 30.0 and not extended.ttl_clamped
    assert [i.session_id for i in engine.retention.snapshot(clock.now)] == ["b", "a"]  # a is newest now
    clamped = engine.retention.extend("a", 1e9, clock.now)
    assert clamped is not None and clamped.ttl_left_s == 100.0 and clamped.ttl_clamped
    assert engine.retention.extend("nobody", 10.0, clock.now) is None
    with pytest.raises(ValueError, match="positive"):
        engine.retention.extend("a", 0.0, clock.now)
    assert engine.retention.release("a") == 10 and engine.retention.release("a") is None
    assert engine.retention.release("b") == 10
    assert engine.pool.num_free == engine.pool.num_blocks


def test_the_cap_drops_the_oldest_retentions_then_keeps_a_leading_prefix() -> None:
    engine = Engine(POOL, max_retained_fraction=0.25)  # 16 of 64 blocks
    clock = Clock(engine)
    assert engine.retention.max_blocks == 16
    clock.run(req("a", tokens(160, 1), 1, session="a", ttl=60.0))  # 10 blocks
    clock.run(req("b", tokens(160, 2), 1, session="b", ttl=60.0))  # 10 more: over the cap, a goes
    assert [i.session_id for i in engine.retention.snapshot(clock.now)] == ["b"]
    assert engine.stats().retentions_dropped_total == 1
    prompt = tokens(352, 3)
    answer = clock.run(req("c", prompt, 1, session="c", ttl=60.0))  # 22 blocks: b goes, c is cut to 16
    (info,) = engine.retention.snapshot(clock.now)
    assert (info.session_id, info.num_blocks) == ("c", 16)
    assert engine.stats().num_retained_blocks == 16 and engine.stats().retentions_dropped_total == 2
    flood(clock)
    clock.run(req("c2", prompt + answer, 1, session="c"))
    assert clock.cached_tokens("c2") == 16 * 16  # the leading prefix survived


def test_blocks_shared_by_sessions_are_counted_once_against_the_cap() -> None:
    engine = Engine(POOL, max_retained_fraction=0.25)
    clock = Clock(engine)
    system = tokens(128, 9)  # 8 blocks every session shares
    clock.run(req("a", system + tokens(64, 1), 1, session="a", ttl=60.0))  # 12 blocks
    clock.run(req("b", system + tokens(64, 2), 1, session="b", ttl=60.0))  # 4 new ones: 16 distinct
    assert engine.retention.num_sessions == 2 and engine.retention.num_blocks == 16
    assert engine.stats().retentions_dropped_total == 0
    assert engine.retention.release("a") == 12
    assert all(engine.pool.ref_count(b) == 1 for b in engine.retention.held()[0])


def test_a_waiting_request_larger_than_the_free_space_gets_retentions_released_oldest_first() -> None:
    engine = Engine(POOL, max_retained_fraction=1.0)
    clock = Clock(engine)
    for i, session in enumerate("abc"):
        clock.run(req(session, tokens(320, i), 1, session=session, ttl=600.0))  # 20 blocks each
    assert engine.retention.num_blocks == 60 and engine.pool.num_free == 4
    clock.run(req("big", tokens(600, 7), 8))  # 38 blocks: a and b must go, c can stay
    assert [i.session_id for i in engine.retention.snapshot(clock.now)] == ["c"]
    assert engine.stats().retentions_dropped_total == 2 and engine.num_preemptions == 0
    assert not engine.has_unfinished()


def test_a_running_request_gets_retained_blocks_before_anyone_is_preempted() -> None:
    engine = Engine(POOL, max_retained_fraction=1.0)
    clock = Clock(engine)
    clock.submit(req("long", tokens(16, 1), 400))  # grows from 1 block to 26 while decoding
    clock.step()
    for i, session in enumerate("abc"):
        clock.submit(req(session, tokens(320, 10 + i), 1, session=session, ttl=600.0))
    clock.drain()
    assert engine.num_preemptions == 0 and len(clock.outputs["long"]) == 400
    assert engine.stats().retentions_dropped_total >= 1


def test_a_waiting_request_that_would_not_fit_anyway_releases_nothing() -> None:
    engine = Engine(POOL, max_retained_fraction=1.0)
    clock = Clock(engine)
    clock.run(req("a", tokens(160, 1), 1, session="a", ttl=600.0))  # 10 blocks retained
    clock.submit(req("hog", tokens(800, 2), 8))  # 50 blocks, admitted now
    clock.step()
    clock.submit(req("next", tokens(480, 3), 8))  # 30 blocks: cannot fit until hog ends, retention or not
    clock.step()
    assert "a" in engine.retention and engine.stats().retentions_dropped_total == 0
    clock.drain()
    assert "next" in clock.finished_at


def test_reset_prefix_cache_releases_retentions_first_but_is_refused_while_requests_run() -> None:
    engine = Engine(POOL)
    clock = Clock(engine)
    prompt = tokens(320, 1)
    clock.run(req("a", prompt, 1, session="a", ttl=600.0))
    clock.submit(req("busy", tokens(64, 2), 4))
    clock.step()
    assert engine.reset_prefix_cache() is False and "a" in engine.retention
    clock.drain()
    assert engine.reset_prefix_cache() is True
    assert engine.retention.num_sessions == 0 and engine.pool.num_cached == 0
    assert engine.probe_prefix(prompt) == 0


def test_requests_that_cannot_be_retained_are_rejected() -> None:
    engine = Engine(POOL)
    with pytest.raises(InvalidRequestError, match="session id"):
        engine.add_request(req("r", tokens(32, 1), ttl=10.0), 0.0)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(InvalidRequestError, match="saga_retain_ttl_s"):
            engine.add_request(req("r", tokens(32, 1), session="s", ttl=bad), 0.0)
    with pytest.raises(ValueError, match="fraction"):
        Engine(POOL, max_retained_fraction=1.5)


def test_an_aborted_request_retains_nothing_and_a_zero_cap_disables_retention() -> None:
    engine = Engine(POOL)
    clock = Clock(engine)
    clock.submit(req("r", tokens(320, 1), 40, session="s", ttl=60.0))
    clock.step()
    assert engine.abort("r")
    assert engine.retention.num_sessions == 0 and engine.pool.num_free == engine.pool.num_blocks
    off = Engine(POOL, max_retained_fraction=0.0)
    Clock(off).run(req("r", tokens(320, 1), 1, session="s", ttl=60.0))
    assert off.retention.num_sessions == 0 and off.pool.num_free == off.pool.num_blocks


def test_retention_table_refuses_bad_caps() -> None:
    pool = Engine(POOL).pool
    with pytest.raises(ValueError, match="positive"):
        RetentionTable(pool, max_ttl_s=0.0)


_OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["add", "add", "add", "steps", "drain", "abort", "extend", "release", "expire", "reset"]
        ),
        st.integers(0, 3),  # session
        st.integers(0, 2),  # which shared prefix
        st.integers(1, 40),  # size knob
        st.booleans(),  # retain?
    ),
    min_size=10,
    max_size=80,
)


@settings(max_examples=80, deadline=None)
@given(ops=_OPS, fraction=st.sampled_from([0.0, 0.25, 0.5, 1.0]))
def test_random_requests_retains_releases_and_resets_keep_the_pool_consistent(
    ops: list[tuple[str, int, int, int, bool]], fraction: float
) -> None:
    engine = Engine(POOL, scheduling_policy="priority", max_retained_fraction=fraction, max_retain_ttl_s=5.0)
    clock = Clock(engine)
    prefixes = [tokens(160, 100 + k) for k in range(3)]
    live: list[str] = []
    for n, (op, session, prefix, size, retain) in enumerate(ops):
        sid = f"s{session}"
        if op == "add":
            prompt = prefixes[prefix] + tokens(size * 8, n)
            rid = f"r{n}"
            clock.submit(req(rid, prompt, size % 8 + 1, session=sid, ttl=float(size) if retain else None))
            live.append(rid)
        elif op == "steps":
            for _ in range(size % 8 + 1):
                if engine.has_unfinished():
                    clock.step()
        elif op == "drain":
            clock.drain()
        elif op == "abort" and live:
            engine.abort(live.pop(size % len(live)))
        elif op == "extend":
            engine.retention.extend(sid, float(size), clock.now)
        elif op == "release":
            engine.retention.release(sid)
        elif op == "expire":
            clock.now += size / 2
            engine.expire_retentions(clock.now)
        elif op == "reset":
            engine.reset_prefix_cache()
        engine.pool.check_invariants(engine.held_blocks())
        assert engine.retention.num_blocks <= engine.retention.max_blocks
        references = sum(map(len, engine.retention.held()))
        assert engine.retention.num_references == references <= engine.retention.max_references
        assert engine.pool.num_free + sum(map(len, engine.held_blocks())) >= engine.pool.num_blocks
    clock.drain()  # everything finishes: retention never deadlocks the engine
    assert engine.reset_prefix_cache() is True
    assert engine.pool.num_free == engine.pool.num_blocks and engine.retention.num_sessions == 0
