"""The retention table's caps on what any client may make it hold (simulator/retention.py, shipped as the
vLLM plugin's retention_table.py): session ids of bounded length, and a bound on the references all
retentions hold together, so many sessions sharing one prompt's blocks cannot grow it past O(pool size)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import pytest

from proxy.config import ProxyConfig
from proxy.identity import MAX_ID_CHARS, scheduled_session_id
from proxy.scheduler.registry import ConfigError
from simulator.engine import Engine, InvalidRequestError
from simulator.retention import MAX_SESSION_ID_CHARS, RetentionTable
from tests.simulator.test_retention import POOL, Clock, req, tokens


class CountingPool:
    """The smallest KvPool: reference counts only (every block is cached, none is free)."""

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.block_size = 16
        self.num_free = 0
        self.refs = [0] * num_blocks

    def ref_count(self, block_id: int) -> int:
        return self.refs[block_id]

    def num_evictable(self, block_ids: Iterable[int]) -> int:
        return sum(1 for b in block_ids if self.refs[b] == 0)

    def touch(self, block_ids: Sequence[int]) -> None:
        for b in block_ids:
            self.refs[b] += 1

    def free(self, block_ids: Iterable[int]) -> None:
        for b in block_ids:
            assert self.refs[b] > 0
            self.refs[b] -= 1


def table_of(num_blocks: int = 64) -> tuple[RetentionTable, CountingPool]:
    pool = CountingPool(num_blocks)
    return RetentionTable(pool, max_fraction=0.5), pool


def held_references(table: RetentionTable, pool: CountingPool) -> int:
    """The references the retentions hold, checked against the pool's counts."""
    held = table.held()
    counts = [0] * pool.num_blocks
    for blocks in held:
        assert blocks, "a retention without blocks stays in the table"
        for b in blocks:
            counts[b] += 1
    assert counts == pool.refs
    return sum(map(len, held))


def test_many_sessions_sharing_one_prompts_blocks_stay_within_the_reference_cap() -> None:
    # the review's case scaled down: 200 sessions with the longest ids allowed retain one 20-block prompt
    table, pool = table_of(64)  # 32 distinct blocks; references: the floor, 1024
    prompt = list(range(20))
    for i in range(200):
        table.retain(f"{i:03d}".ljust(MAX_SESSION_ID_CHARS, "x"), prompt, 600.0, now=float(i))
    assert len(table.held()) == 1024 // 20  # the newest 51; the oldest were dropped
    assert table.max_references == 1024 and table.num_references == held_references(table, pool) == 1020
    assert table.num_blocks == 20 and table.num_dropped == 200 - 51
    assert [info.session_id[:3] for info in table.snapshot(200.0)] == [f"{i:03d}" for i in range(149, 200)]


def test_the_reference_cap_scales_with_the_block_cap_past_its_floor() -> None:
    table, pool = table_of(2000)  # 1000 distinct blocks, 4000 references
    assert (table.max_blocks, table.max_references) == (1000, 4000)
    for i in range(50):
        table.retain(f"s{i}", range(300), 600.0, now=0.0)
    assert len(table.held()) == 4000 // 300 and held_references(table, pool) == 3900


def test_past_the_reference_cap_a_retention_drops_only_its_peers_then_keeps_a_leading_part_or_nothing() -> (
    None
):
    table, pool = table_of(64)
    prompt = list(range(20))
    for i in range(51):  # more important ones: 1020 of the 1024 references
        table.retain(f"vip{i}", prompt, 600.0, now=0.0, priority=-1)
    first = table.retain("a", prompt, 600.0, now=1.0)
    assert first is not None and first.num_blocks == 4  # the leading blocks that fit
    second = table.retain("b", prompt, 600.0, now=2.0)
    assert second is not None and second.num_blocks == 4 and "a" not in table  # its peer went first
    assert held_references(table, pool) == 1024 and table.num_sessions == 52
    vip = table.retain("vip-last", prompt[:4], 600.0, now=3.0, priority=-1)
    assert vip is not None and vip.num_blocks == 4 and "b" not in table  # "b" was less important
    # the more important ones hold every reference: each new one is cut to nothing and leaves no entry
    refused = [table.retain(f"late{i}", prompt, 600.0, now=4.0) for i in range(100)]
    assert refused == [None] * 100 and not any(f"late{i}" in table for i in range(100))
    assert held_references(table, pool) == 1024 and table.num_sessions == 52
    assert table.retain("empty", [], 600.0, now=4.0) is None and "empty" not in table


def test_a_session_id_past_the_cap_is_refused_and_changes_nothing() -> None:
    table, pool = table_of(64)
    longest = "s" * MAX_SESSION_ID_CHARS
    assert table.retain(longest, [0, 1], 60.0, now=0.0) is not None
    with pytest.raises(ValueError, match=f"at most {MAX_SESSION_ID_CHARS} characters"):
        table.retain(longest + "s", [2, 3], 60.0, now=0.0)
    assert table.num_sessions == 1 and pool.refs[:4] == [1, 1, 0, 0] and table.version == 1


def test_the_engine_refuses_a_retention_under_a_session_id_past_the_cap() -> None:
    engine = Engine(POOL)
    with pytest.raises(InvalidRequestError, match=f"at most {MAX_SESSION_ID_CHARS} characters"):
        engine.add_request(req("r", tokens(32, 1), session="s" * (MAX_SESSION_ID_CHARS + 1), ttl=10.0), 0.0)
    assert not engine.has_unfinished()
    engine.add_request(req("ok", tokens(32, 1), session="s" * MAX_SESSION_ID_CHARS, ttl=10.0), 0.0)


def test_the_id_cap_admits_every_session_id_the_proxy_sends() -> None:
    # the proxy sends a keyed client's session as "<tenant>:<id>": both at their longest must pass
    tenant = "t" * 128  # proxy/config.py: tenant names of 1 to 128 characters
    with pytest.raises(ConfigError, match="1 to 128"):
        ProxyConfig(replicas=["http://127.0.0.1:8000"], api_keys={"key": tenant + "t"}).validate()
    sent = scheduled_session_id("s" * MAX_ID_CHARS, inferred=False, scope=tenant)
    assert len(sent) == 128 + 1 + MAX_ID_CHARS <= MAX_SESSION_ID_CHARS
    table, _ = table_of(64)
    assert table.retain(sent, [0], 60.0, now=0.0) is not None


def test_rearming_in_a_loop_keeps_the_expiries_bounded_and_in_order() -> None:
    # each re-arm used to leave its old expiry in the heap until that time came: one entry a call
    table, _ = table_of(64)
    rng = random.Random(7)
    for i in range(10):
        table.retain(f"s{i}", [i], 600.0, now=0.0)
    for n in range(5000):
        table.extend(f"s{rng.randrange(10)}", rng.uniform(1.0, 600.0), now=n * 1e-3)
        assert len(table._expiry) <= 2 * table.num_sessions + 64 + 1
    expiries = sorted((info.expires_at, info.session_id) for info in table.snapshot(5.0))
    for expires_at, session_id in expiries:
        assert table.next_expiry() == expires_at
        assert table.expire(expires_at) == 1 and session_id not in table
    assert table.next_expiry() is None and table.num_sessions == 0


def test_sessions_that_cached_nothing_leave_no_chain_hint_behind() -> None:
    """The engine keeps each session's last cached chain as a hint for its next lookup, bounded in blocks:
    a session whose request cached no whole block left an empty hint, an entry that bound never dropped
    (one per session id ever seen, ids of any length)."""
    clock = Clock(Engine(POOL))
    for i in range(500):
        clock.run(req(f"r{i}", tokens(8, i), max_tokens=2, session=f"session-{i}-" + "x" * 200))
    assert len(clock.engine._chain_hints) == 0
    clock.run(req("long", tokens(64, 1), max_tokens=2, session="kept"))
    assert list(clock.engine._chain_hints) == ["kept"]
