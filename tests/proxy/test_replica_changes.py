"""The admin API's replica set changes, recorded for workers that start later (proxy/replica_changes.py)."""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.synchronize
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.config import DnsDiscovery
from proxy.context import Guards
from proxy.discovery import dns_discovery_loop
from proxy.replica_changes import FILE, ReplicaChanges, ReplicaChangesError, ReplicaSetChanges
from proxy.replica_guard import GuardParams
from proxy.scheduler import SchedulerCore, build_policy


def test_changes_fold_into_the_resulting_state() -> None:
    state = ReplicaSetChanges()
    state = state.fold("added", "http://b").fold("added", "http://a").fold("draining", "http://a")
    assert state == ReplicaSetChanges(["http://a", "http://b"], ["http://a"], [])
    state = state.fold("removed", "http://a").fold("removed", "http://c")
    assert state == ReplicaSetChanges(["http://b"], [], ["http://a", "http://c"])
    assert state.fold("removed", "http://c") == state  # idempotent: every worker records what it applied
    assert state.fold("added", "http://c") == ReplicaSetChanges(["http://b", "http://c"], [], ["http://a"])


def test_the_record_survives_a_new_reader_and_a_missing_one_is_no_change(tmp_path: Path) -> None:
    assert ReplicaChanges(str(tmp_path)).load() == ReplicaSetChanges()
    ReplicaChanges(str(tmp_path)).record("added", "http://x")
    ReplicaChanges(str(tmp_path)).record("draining", "http://x")
    assert ReplicaChanges(str(tmp_path)).load() == ReplicaSetChanges(["http://x"], ["http://x"], [])
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE, "replica-changes.lock"]  # nothing left aside


@pytest.mark.parametrize(
    "content", [b"{", b"[]", b'{"added": "http://x"}', b'{"added": [], "extra": 1}', b"\xff"]
)
def test_a_damaged_record_is_reported_and_replaced_by_the_next_change(tmp_path: Path, content: bytes) -> None:
    (tmp_path / FILE).write_bytes(content)
    with pytest.raises(ReplicaChangesError, match=FILE):
        ReplicaChanges(str(tmp_path)).load()
    ReplicaChanges(str(tmp_path)).record("removed", "http://y")
    assert ReplicaChanges(str(tmp_path)).load() == ReplicaSetChanges([], [], ["http://y"])


def test_an_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReplicaChangesError, match="cannot record"):
        ReplicaChanges(str(tmp_path / "gone")).record("added", "http://x")


def _record_many(directory: str, prefix: str, start: multiprocessing.synchronize.Barrier) -> None:
    changes = ReplicaChanges(directory)
    start.wait(60)  # all three at once: each spawned child takes its own time to start
    for i in range(40):
        changes.record("added", f"http://{prefix}-{i}")


def test_workers_recording_at_once_lose_no_change(tmp_path: Path) -> None:
    """Read-modify-write under the lock: without it two processes overwrite each other's additions."""
    # spawn, not fork: pytest runs threads by now, and a forked child can inherit a lock one of them held
    # (Python 3.12 warns of it)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(3)
    procs = [context.Process(target=_record_many, args=(str(tmp_path), p, start)) for p in ("a", "b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    added = ReplicaChanges(str(tmp_path)).load().added
    assert len(added) == 120 and len(set(added)) == 120


async def test_discovery_does_not_bring_back_a_replica_removed_before_a_restart() -> None:
    """A restarted worker passes its admin-removed replicas as already managed: while they still resolve
    they stay out, as they do in the workers that removed them; a new address is still added."""
    core = SchedulerCore([], build_policy("round-robin"), lambda: 0.0)
    discovery = DnsDiscovery(name="vllm.local", port=8000, interval_s=0.01)
    resolutions = 0

    async def resolve(name: str, port: int) -> list[str]:
        nonlocal resolutions
        resolutions += 1
        if resolutions >= 3:
            raise asyncio.CancelledError
        return ["10.0.0.1", "10.0.0.2"]

    with pytest.raises(asyncio.CancelledError):
        await dns_discovery_loop(
            core, Guards(GuardParams()), discovery, resolve, managed={"http://10.0.0.1:8000"}
        )
    assert sorted(core.replicas) == ["http://10.0.0.2:8000"]


async def run_discovery(
    core: SchedulerCore,
    *answers: list[str],
    managed: set[str] | None = None,
    after: Callable[[int], None] | None = None,
) -> list[tuple[list[str], list[str]]]:
    """Runs discovery over `answers` (one a resolution); the replica set and drains after each. `after(n)`
    acts after the n-th resolution (as the admin API would between two)."""
    seen: list[tuple[list[str], list[str]]] = []
    left = list(answers)
    first = True

    async def resolve(name: str, port: int) -> list[str]:
        nonlocal first
        if not first:
            seen.append((sorted(core.replicas), sorted(core.draining)))
            if after is not None:
                after(len(seen))
        first = False
        if not left:
            raise asyncio.CancelledError
        return left.pop(0)

    discovery = DnsDiscovery(name="vllm.local", port=8000, interval_s=0.001)
    with pytest.raises(asyncio.CancelledError):
        await dns_discovery_loop(core, Guards(GuardParams()), discovery, resolve, managed=managed)
    return seen


A, B = "http://10.0.0.1:8000", "http://10.0.0.2:8000"


async def test_discovery_never_removes_a_replica_the_configuration_lists() -> None:
    """A configured replica the name also resolved to was taken as discovery's, and removed once the name
    stopped listing it: every call went to the other."""
    core = SchedulerCore([A], build_policy("round-robin"), lambda: 0.0)
    seen = await run_discovery(core, ["10.0.0.1", "10.0.0.2"], ["10.0.0.2"], ["10.0.0.2"], ["10.0.0.2"])
    assert seen[-1][0] == [A, B]


async def test_one_missed_answer_removes_nothing_and_a_drained_replica_comes_back_drained() -> None:
    """A discovered replica drained through the admin API was removed by one answer that missed it and
    came back undrained when listed again: 10 of 10 new sessions went to it."""
    both = ["10.0.0.1", "10.0.0.2"]
    core = SchedulerCore([], build_policy("round-robin"), lambda: 0.0)

    def drain(n: int) -> None:
        if n == 1:
            core.draining.add(A)  # the admin API drains it once it was found

    states = await run_discovery(
        core, both, ["10.0.0.2"], ["10.0.0.2"], ["10.0.0.2"], both, both, after=drain
    )
    assert states[1] == ([A, B], [A])  # missing from one answer: kept
    assert ([B], []) in states  # missing from two answers in a row: removed
    assert states[-1] == ([A, B], [A])  # listed again: back, and still drained


async def test_a_restarted_worker_keeps_a_drain_it_replayed_before_discovery_found_the_replica() -> None:
    """With workers, a restarted worker replays the admin API's drain, then its first resolution added the
    replica and undid the drain: 7 of 20 new sessions went to the drained replica."""
    core = SchedulerCore([], build_policy("round-robin"), lambda: 0.0)
    core.draining.add(A)  # replayed (proxy/admin.py replay_replica_changes) before the replica is known
    seen = await run_discovery(core, ["10.0.0.1", "10.0.0.2"], ["10.0.0.1", "10.0.0.2"])
    assert seen[-1] == ([A, B], [A])


async def test_a_replica_the_admin_api_removed_stays_out_while_the_name_lists_it() -> None:
    """A configured (or admin-added) replica the name also listed came back one resolution after the admin
    API removed it: 10 of 20 new sessions went to it."""
    core = SchedulerCore([A], build_policy("round-robin"), lambda: 0.0)
    both = ["10.0.0.1", "10.0.0.2"]

    def remove(n: int) -> None:
        if n == 1:
            core.remove_replica(A)  # the admin API removes it after the first resolution

    states = await run_discovery(core, both, both, both, both, after=remove)
    assert states[-1] == ([B], [])


def test_an_undrain_is_recorded_as_one_not_as_an_addition() -> None:
    """The admin API's add of a replica in the set (an undrain) was recorded as `added`: a restarted worker
    then took a discovered replica for the admin API's and kept it once the name stopped listing it, while
    the other workers removed it (5 of 20 new sessions still sent there)."""
    state = ReplicaSetChanges().fold("draining", A).fold("undrained", A)
    assert state == ReplicaSetChanges([], [], [])
    state = ReplicaSetChanges().fold("added", B).fold("draining", B).fold("undrained", B)
    assert state == ReplicaSetChanges([B], [], [])  # added by the admin API, and still


async def test_a_replica_the_admin_api_removed_stays_out_through_one_missed_answer() -> None:
    """Forgotten at the first answer missing it, a replica the admin API removed came back at the next one
    (and only in the workers that had not restarted: a restarted one, which replays the removal, counts two
    misses as for a replica discovery added)."""
    core = SchedulerCore([A], build_policy("round-robin"), lambda: 0.0)
    both, b_only = ["10.0.0.1", "10.0.0.2"], ["10.0.0.2"]

    def remove(n: int) -> None:
        if n == 1:
            core.remove_replica(A)

    states = await run_discovery(core, both, both, b_only, both, both, after=remove)
    assert all(replicas == [B] for replicas, _ in states[1:]), states


async def test_a_discovered_replica_the_admin_api_removed_then_added_again_is_the_admin_apis() -> None:
    """Added again through the admin API, a discovered replica was still taken as discovery's and removed
    once the name stopped listing it (while a restarted worker, replaying the addition, kept it)."""
    core = SchedulerCore([], build_policy("round-robin"), lambda: 0.0)
    both, b_only = ["10.0.0.1", "10.0.0.2"], ["10.0.0.2"]

    def admin(n: int) -> None:
        if n == 1:
            core.remove_replica(A)
        elif n == 2:
            core.add_replica(A)

    states = await run_discovery(core, both, both, both, b_only, b_only, b_only, after=admin)
    assert states[1][0] == [B] and states[-1][0] == [A, B], states
