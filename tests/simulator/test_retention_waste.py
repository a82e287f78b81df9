"""Retained block-seconds by how a retention ended (used by the session's next call, expired, dropped,
released, still held), counted in a hand-made engine run in simulated time."""

from __future__ import annotations

import pytest

from simulator.engine import Engine
from simulator.retention import RetentionTable
from tests.simulator.test_retention import POOL, Clock, req, tokens


def retain_one(clock: Clock, session: str, seed: int, ttl: float, prompt_tokens: int = 64) -> int:
    """Run one call of `session` that asks for a retention; the blocks it retained."""
    clock.run(req(f"{session}-{clock.now}", tokens(prompt_tokens, seed), session=session, ttl=ttl))
    info = clock.engine.retention.info(session, clock.now)
    assert info is not None and info.num_blocks > 0
    return info.num_blocks


def test_each_way_a_retention_ends_adds_its_blocks_times_its_holding_time() -> None:
    engine = Engine(POOL)
    clock = Clock(engine)
    ended = engine.retention.ended

    # A comes back 5 s after its call: the retention was used, for 5 s
    prompt_a = tokens(64, seed=1)
    clock.run(req("a1", prompt_a, session="a", ttl=30.0))
    a_at, a_blocks = clock.now, engine.retention.info("a", clock.now).num_blocks  # type: ignore[union-attr]
    clock.now += 5.0
    follow_up = prompt_a + [t for out in clock.outputs["a1"] for t in out.new_token_ids] + tokens(16, seed=2)
    clock.run(req("a2", follow_up, session="a"))
    assert "a" not in engine.retention
    assert ended["used"].count == 1
    assert ended["used"].block_seconds == pytest.approx(a_blocks * (a_at + 5.0 - a_at))

    # B never comes back: its retention expires after its TTL, counted to the TTL even when expired late
    b_blocks = retain_one(clock, "b", seed=3, ttl=2.0)
    clock.now += 7.0
    assert engine.expire_retentions(clock.now) == 1
    assert ended["expired"].count == 1
    assert ended["expired"].block_seconds == pytest.approx(b_blocks * 2.0)

    # C is let go by a client after 1 s
    c_blocks = retain_one(clock, "c", seed=4, ttl=60.0)
    clock.now += 1.0
    engine.expire_retentions(clock.now)  # the replica's routes tick the table's clock first
    assert engine.retention.release("c", "released") == c_blocks
    assert ended["released"].count == 1
    assert ended["released"].block_seconds == pytest.approx(c_blocks * 1.0)

    # D is dropped 3 s later: a request needing almost the whole pool, with nothing running, breaks it
    d_blocks = retain_one(clock, "d", seed=5, ttl=60.0)
    clock.now += 3.0  # the hog's first step starts then and breaks the retention
    clock.run(req("hog", tokens(62 * 16, seed=6), max_tokens=1))
    assert "d" not in engine.retention
    assert ended["dropped"].count == 1
    assert ended["dropped"].block_seconds == pytest.approx(d_blocks * 3.0)

    # E is still held: what it held so far, and nothing of it counted as ended
    e_blocks = retain_one(clock, "e", seed=7, ttl=60.0)
    e_at = clock.now
    assert engine.retention.held_block_seconds(e_at + 4.0) == pytest.approx(e_blocks * 4.0)
    assert sum(t.count for t in ended.values()) == 4


def test_a_new_retention_replacing_the_sessions_previous_one_counts_it_as_used() -> None:
    engine = Engine(POOL)
    clock = Clock(engine)
    blocks = retain_one(clock, "s", seed=1, ttl=60.0)
    engine.retention.retain("s", engine.retention.held()[0], 60.0, clock.now + 2.0)
    assert engine.retention.ended["used"].count == 1
    assert engine.retention.ended["used"].block_seconds == pytest.approx(blocks * 2.0)
    assert RetentionTable(Engine(POOL).pool).ended["used"].count == 0  # each table keeps its own books
