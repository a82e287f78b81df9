"""The workers' shared load table (proxy/shared_load.py) and the sync step (proxy/load_sync.py)."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from proxy.load_sync import LoadSync, load_sync_loop
from proxy.scheduler import PRESETS, Dispatch, Reject, ReplicaStats, SchedulerCore, Usage, build_policy
from proxy.scheduler.plugin_spec import PluginSpec
from proxy.scheduler.release import ReleaseQueueSpec
from proxy.scheduler.types import RequestInfo
from proxy.shared_load import LoadTable, region_words, replica_key
from proxy.worker_set import WorkerSet, owner_of

SECOND = 1_000_000_000
KEYS = [replica_key(f"http://replica-{i}:8000") for i in range(64)]


def _write_until(directory: str, index: int, stop: Any) -> None:
    """Publishes (n x 1000 reserved, n in flight, n mod 3 held, 2n released) on every key, n counting up,
    until `stop` is set."""
    table = LoadTable(directory, 3, index)
    n = 0
    while not stop.is_set():
        for _ in range(100):
            n += 1
            table.publish([(k, 1000 * n, n, n % 3, 2 * n) for k in KEYS], time.monotonic_ns())
    table.close()


def test_a_reader_never_sees_a_torn_region_while_two_processes_write(tmp_path: Path) -> None:
    reader = LoadTable(str(tmp_path), 3, 2)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    writers = [ctx.Process(target=_write_until, args=(str(tmp_path), i, stop)) for i in (0, 1)]
    for w in writers:
        w.start()
    seen: dict[int, set[int]] = {0: set(), 1: set()}  # worker -> the publishes (n) read whole
    deadline = time.monotonic() + 120  # a bound for a stuck writer only: a busy host just reads longer
    try:
        while min(len(s) for s in seen.values()) < 100 and time.monotonic() < deadline:
            totals = reader.others(time.monotonic_ns(), 60 * SECOND)
            if totals:  # every region read comes from one publish: the sum has one n per writer on each key
                assert len({totals[k] for k in KEYS}) == 1, totals
                assert totals[KEYS[0]][0] == 1000 * totals[KEYS[0]][1]
            for worker in (0, 1):
                copy = reader._read(worker)
                if copy is None:
                    continue
                records = copy.records
                n = records[2]
                assert records == [v for k in KEYS for v in (k, 1000 * n, n, n % 3, 2 * n)]
                seen[worker].add(n)
    finally:
        stop.set()
        for w in writers:
            w.join(30)
    assert all(w.exitcode == 0 for w in writers)
    assert min(len(s) for s in seen.values()) >= 100  # read many publishes of each, while both wrote


def test_a_region_not_refreshed_within_the_staleness_bound_counts_for_nothing(tmp_path: Path) -> None:
    alive, dead, reader = (LoadTable(str(tmp_path), 3, i) for i in range(3))
    key = KEYS[0]
    dead.publish([(key, 500, 5, 0, 0)], now_ns=10 * SECOND)
    alive.publish([(key, 7, 1, 0, 0)], now_ns=12 * SECOND)
    assert reader.others(12 * SECOND, SECOND) == {key: (7, 1)}  # dead's heartbeat is 2 s old
    assert reader.others(12 * SECOND, 3 * SECOND) == {key: (507, 6)}
    assert reader.others(12 * SECOND, 3 * SECOND).keys() == {key}
    assert LoadTable(str(tmp_path), 3, 0).others(12 * SECOND, 3 * SECOND) == {key: (500, 5)}  # not its own


def test_a_region_never_written_or_left_mid_write_counts_for_nothing_once_stale(tmp_path: Path) -> None:
    writer, reader = LoadTable(str(tmp_path), 2, 0), LoadTable(str(tmp_path), 2, 1)
    assert reader.others(SECOND, SECOND) == {}  # never written
    writer.publish([(KEYS[0], 100, 2, 0, 0)], now_ns=SECOND)
    assert reader.others(SECOND, SECOND) == {KEYS[0]: (100, 2)}
    writer._words[0] += 1  # the writer died between its two counter writes: odd for ever
    torn = reader.torn_reads
    assert reader.others(SECOND, SECOND) == {KEYS[0]: (100, 2)}  # the last consistent copy, while fresh
    assert reader.torn_reads > torn
    assert reader.others(3 * SECOND, SECOND) == {}


def test_slots_run_out_the_first_replicas_are_published_and_the_rest_counted(tmp_path: Path) -> None:
    writer, reader = LoadTable(str(tmp_path), 2, 0, slots=4), LoadTable(str(tmp_path), 2, 1, slots=4)
    assert writer.publish([(k, 10, 1, 0, 0) for k in KEYS[:6]], now_ns=SECOND) == 2
    assert reader.others(SECOND, SECOND) == {k: (10, 1) for k in KEYS[:4]}
    assert writer._words[3] == 2  # the region says how many it left out
    assert writer.publish([(k, 10, 1, 0, 0) for k in KEYS[:3]], now_ns=SECOND) == 0
    assert reader.others(SECOND, SECOND) == {k: (10, 1) for k in KEYS[:3]}  # replicas that left are gone
    assert (tmp_path / "load.table").stat().st_size == 2 * region_words(4) * 8


def test_a_restarted_worker_continues_its_region(tmp_path: Path) -> None:
    first = LoadTable(str(tmp_path), 2, 0)
    first.publish([(KEYS[0], 1, 1, 0, 0)], now_ns=SECOND)
    first.publish([(KEYS[0], 2, 2, 0, 0)], now_ns=SECOND)
    seq = first._words[0]
    first.close()
    again = LoadTable(str(tmp_path), 2, 0)
    again.publish([(KEYS[0], 3, 3, 0, 0)], now_ns=2 * SECOND)
    assert again._words[0] == seq + 2
    assert LoadTable(str(tmp_path), 2, 1).others(2 * SECOND, SECOND) == {KEYS[0]: (3, 3)}


def test_replica_keys_are_stable_across_processes() -> None:
    assert replica_key("http://a:8000") == replica_key("http://a:8000") != replica_key("http://b:8000")
    assert replica_key("http://a:8000") == 6569443382333378865  # a fixed hash, not Python's salted one


def test_two_cores_synced_through_the_table_each_count_the_others_calls(tmp_path: Path) -> None:
    replicas = ["http://r0", "http://r1"]
    cores = [SchedulerCore(replicas, build_policy("least-request", seed=0), lambda: 0.0) for _ in range(2)]
    syncs = [LoadSync(core, LoadTable(str(tmp_path), 2, i)) for i, core in enumerate(cores)]
    for i in range(3):
        cores[0].request_arrived(RequestInfo(request_id=f"a{i}", session_id=f"s{i}", arrived_at=0.0))
    own = {r.replica_id: r.in_flight for r in cores[0].replicas.values()}
    for sync in syncs + syncs:  # each publishes, then reads the other's
        sync.step(SECOND)
    assert {r.replica_id: r.foreign_in_flight for r in cores[1].replicas.values()} == own
    assert all(r.foreign_in_flight == 0 for r in cores[0].replicas.values())
    # the other worker's calls finish: the next sync takes them off
    for i in range(3):
        cores[0].request_finished(f"a{i}")
    syncs[0].step(2 * SECOND)
    syncs[1].step(2 * SECOND)
    assert all(r.in_flight == r.foreign_in_flight == 0 for r in cores[1].replicas.values())
    # a worker that stops syncing is forgotten after the staleness bound
    cores[0].request_arrived(RequestInfo(request_id="late", session_id="late", arrived_at=0.0))
    syncs[0].step(3 * SECOND)
    syncs[1].step(3 * SECOND)
    assert sum(r.foreign_in_flight for r in cores[1].replicas.values()) == 1
    syncs[1].step(4 * SECOND)
    assert sum(r.foreign_in_flight for r in cores[1].replicas.values()) == 0


def test_workers_listing_different_replicas_are_summed_by_key(tmp_path: Path) -> None:
    tables = [LoadTable(str(tmp_path), 4, i) for i in range(4)]
    a, b, c = KEYS[:3]
    tables[0].publish([(a, 10, 1, 0, 0), (b, 20, 2, 0, 0)], now_ns=SECOND)
    # the same list: added column-wise
    tables[1].publish([(a, 100, 10, 0, 0), (b, 200, 20, 0, 0)], now_ns=SECOND)
    tables[2].publish([(c, 5, 5, 0, 0), (a, 1000, 100, 0, 0)], now_ns=SECOND)  # another: merged key by key
    assert tables[3].others(SECOND, SECOND) == {a: (1110, 111), b: (220, 22), c: (5, 5)}
    assert tables[2].others(SECOND, SECOND) == {a: (110, 11), b: (220, 22)}


def test_two_workers_synced_between_arrivals_never_reserve_past_a_replicas_room(tmp_path: Path) -> None:
    """Sessions split between two workers by owner, the table synced after every event: together they admit
    no more onto a replica than one core would (its capacity x overcommit, or one workflow alone)."""
    rng = random.Random(7)
    replicas = [f"http://r{i}" for i in range(3)]
    capacity = 100_000
    cores, syncs = [], []
    for i in range(2):
        core = SchedulerCore(replicas, build_policy("saga", seed=i), lambda: 0.0)
        for rid in replicas:
            core.replica_stats(ReplicaStats(rid, kv_capacity_tokens=capacity))
        cores.append(core)
        syncs.append(LoadSync(core, LoadTable(str(tmp_path), 2, i)))
    admissions = [c.admission for c in cores if c.admission is not None]
    limit = capacity * admissions[0].spec.overcommit
    live: list[tuple[int, str]] = []
    waited = 0
    for n in range(300):
        if live and rng.random() < 0.4:  # a workflow's call ends, and its session with it
            worker, request_id = live.pop(rng.randrange(len(live)))
            cores[worker].request_finished(request_id, Usage(prompt_tokens=1, completion_tokens=1))
            decisions = cores[worker].session_ended(f"s{request_id[1:]}")
        else:
            session = f"s{n}"
            worker = owner_of(session, 2)
            req = RequestInfo(f"q{n}", session, 0.0, prompt_tokens=rng.randrange(5_000, 40_000))
            decisions = cores[worker].request_arrived(req)
            waited += not decisions
        live += [(worker, d.request_id) for d in decisions if isinstance(d, Dispatch)]
        for i in (0, 1, 0, 1):  # each publishes its change, then reads the other's
            live += [(i, d.request_id) for d in syncs[i].step(SECOND) if isinstance(d, Dispatch)]
        for rid in replicas:
            own = [admission.own_reserved(rid) for admission in admissions]
            together, alone = sum(own), max(own)
            assert together <= limit or together == alone, (n, rid, together)
    assert waited > 10  # the replicas were full often enough for the bound to matter


def test_the_other_live_workers_waiting_workflows_are_summed(tmp_path: Path) -> None:
    tables = [LoadTable(str(tmp_path), 3, i) for i in range(3)]
    tables[0].publish([(KEYS[0], 1, 1, 0, 0)], now_ns=SECOND, waiting=4, admitted=7)
    tables[1].publish([], now_ns=3 * SECOND, waiting=2, admitted=3)
    tables[2].publish([], now_ns=3 * SECOND, waiting=0, admitted=9)
    tables[2].others(3 * SECOND, 5 * SECOND)
    assert tables[2].waiting == 6
    assert tables[2].turns == {0: 7, 1: 3}  # the admissions of the others with workflows waiting
    tables[0].others(3 * SECOND, 5 * SECOND)
    assert tables[0].turns == {1: 3}  # worker 2 has none waiting: no turn owed to it
    tables[2].others(3 * SECOND, SECOND)  # worker 0's region is stale now
    assert tables[2].waiting == 2
    tables[0].others(3 * SECOND, SECOND)
    assert tables[0].waiting == 2  # not its own


async def test_a_worker_without_a_usable_directory_says_so_and_schedules_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    core = SchedulerCore(["http://r0"], build_policy("least-request", seed=0), lambda: 0.0)
    workers = WorkerSet(0, 2, str(tmp_path / "missing"))
    await asyncio.wait_for(load_sync_loop(core, workers, lambda decisions: None), 5.0)  # returns at once
    assert "no shared load table" in caplog.text


def test_a_flood_owned_by_one_worker_lets_another_workers_waiting_workflow_in(tmp_path: Path) -> None:
    """Each time one of worker 0's flood workflows ended, worker 0 admitted its own next one into the room in
    the same step, before worker 1 heard of the room: worker 1's workflow waited until the flood stopped.
    The table now says how many workflows each worker admitted, and a worker owing another a turn leaves
    the room to it."""
    now = [0.0]
    capacity = 2_200  # two 600-token workflows at a time (1,600 with predicted growth each; x 1.5)
    cores, syncs = [], []
    for i in range(2):
        core = SchedulerCore(["http://r0"], build_policy("saga", seed=i), lambda: now[0])
        core.replica_stats(ReplicaStats("http://r0", kv_capacity_tokens=capacity))
        cores.append(core)
        syncs.append(LoadSync(core, LoadTable(str(tmp_path), 2, i)))

    def sync() -> list[Any]:
        out = []
        for i in (0, 1, 0, 1):
            out += [(i, d) for d in syncs[i].step(int(now[0] * SECOND) + SECOND)]
        return out

    running: list[str] = []
    for n in range(2):  # the flood fills the replica
        (d,) = cores[0].request_arrived(RequestInfo(f"f{n}", f"flood-{n}", now[0], prompt_tokens=600))
        running.append(d.request_id)
    assert cores[0].request_arrived(RequestInfo("f2", "flood-2", now[0], prompt_tokens=600)) == []
    sync()
    now[0] = 1.0
    light = RequestInfo("light", "light-0", now[0], prompt_tokens=600)
    assert cores[1].request_arrived(light) == []  # no room: it waits in worker 1
    sync()
    done = Usage(prompt_tokens=600, completion_tokens=0)
    for n in range(3, 13):  # a flood workflow ends and the next arrives, again and again
        now[0] += 0.5
        ended = running.pop(0)
        out = [(0, d) for d in cores[0].request_finished(ended, done)]
        out += [(0, d) for d in cores[0].session_ended(f"flood-{ended[1:]}")]
        out += [
            (0, d)
            for d in cores[0].request_arrived(RequestInfo(f"f{n}", f"flood-{n}", now[0], prompt_tokens=600))
        ]
        out += sync()
        running += [d.request_id for w, d in out if isinstance(d, Dispatch) and w == 0]
        if any(isinstance(d, Dispatch) and d.request_id == "light" for _, d in out):
            break
    assert n <= 4, n  # the next room but one at most (one process: the next)


def test_the_other_workers_lanes_and_tenants_are_read(tmp_path: Path) -> None:
    """Per replica, the releases so far of each live other worker holding calls for it; the others' lately
    active tenants, distinct, with those a worker did not list counted."""
    tables = [LoadTable(str(tmp_path), 3, i) for i in range(3)]
    a, b = KEYS[:2]
    tables[0].publish([(a, 0, 1, 2, 7), (b, 0, 1, 0, 3)], now_ns=SECOND, active_tenants=2, tenants=[11, 12])
    tables[1].publish([(a, 0, 1, 1, 4)], now_ns=SECOND, active_tenants=20, tenants=[12, *range(100, 115)])
    tables[2].others(SECOND, SECOND)
    assert tables[2].lanes == {a: {0: 7, 1: 4}}  # nobody holds calls for b
    assert tables[2].tenants == {11, 12, *range(100, 115)} and tables[2].tenants_unlisted == 4
    tables[1].others(3 * SECOND, SECOND)  # worker 0's region is stale
    assert tables[1].lanes == {} and tables[1].tenants == set() and tables[1].tenants_unlisted == 0


def _queued_workers(tmp_path: Path, now: list[float], **queue: Any) -> tuple[list[SchedulerCore], Any]:
    """Two workers' cores with a release queue whose gate lets one call per replica in flight, synced
    through the table; returns them and a `sync()` running each worker's step twice, in turn."""
    gate = PluginSpec("max-in-flight-gate", params={"max_in_flight": 1})
    spec = msgspec.structs.replace(
        PRESETS["least-request"], queue=ReleaseQueueSpec(order="afs", gate=gate, **queue)
    )
    cores, syncs = [], []
    for i in range(2):
        core = SchedulerCore(["http://r0"], build_policy(spec, seed=i), lambda: now[0])
        cores.append(core)
        syncs.append(LoadSync(core, LoadTable(str(tmp_path), 2, i)))

    def sync() -> list[tuple[int, Any]]:
        out = []
        for i in (0, 1, 0, 1):
            out += [(i, d) for d in syncs[i].step(int(now[0] * SECOND) + SECOND)]
        return out

    return cores, sync


def test_a_flood_owned_by_one_worker_leaves_another_workers_held_call_its_turn_at_the_gate(
    tmp_path: Path,
) -> None:
    """The release queue's lanes are each worker's: when one of worker 0's flood calls ended, worker 0
    released its own next held call in the same step, before worker 1 heard of the free slot, so worker 1's
    tenant waited at the gate until the flood stopped (9.6-13.2 s; one process 0.3-0.6 s). The table now
    says how many calls each worker released to each replica, and a worker owing another a turn leaves
    the slot to it."""
    now = [0.0]
    cores, sync = _queued_workers(tmp_path, now)
    (first,) = cores[0].request_arrived(RequestInfo("f0", "flood-0", 0.0, tenant_id="batch"))
    running = [first.request_id]
    for n in range(1, 4):  # held behind the gate
        assert cores[0].request_arrived(RequestInfo(f"f{n}", f"flood-{n}", 0.0, tenant_id="batch")) == []
    sync()
    now[0] = 1.0
    assert cores[1].request_arrived(RequestInfo("light", "light-0", now[0], tenant_id="inter")) == []
    sync()
    served = False
    for n in range(4, 14):  # a flood call ends and another arrives, again and again
        now[0] += 0.5
        out = [(0, d) for d in cores[0].request_finished(running.pop(0), Usage(100, 10))]
        out += [(0, d) for d in cores[0].request_arrived(RequestInfo(f"f{n}", f"flood-{n}", now[0]))]
        out += sync()
        if any(isinstance(d, Dispatch) and d.request_id == "light" for _, d in out):
            served = True
            break
        running += [d.request_id for w, d in out if isinstance(d, Dispatch) and w == 0]
        assert len(running) == 1  # the gate: one call in flight
    assert served and n == 4, n  # the first slot freed goes to worker 1's turn


def test_tenants_on_different_workers_turn_on_a_queue_that_waits_for_two(tmp_path: Path) -> None:
    """`min_active_tenants` counted the tenants one worker saw: two tenants whose sessions belonged to
    different workers never turned the release queue on. The workers now publish their tenants."""
    now = [0.0]
    cores, sync = _queued_workers(tmp_path, now, min_active_tenants=2)
    (a,) = cores[0].request_arrived(RequestInfo("a0", "sa", 0.0, tenant_id="alpha"))
    (b,) = cores[1].request_arrived(RequestInfo("b0", "sb", 0.0, tenant_id="beta"))  # one tenant each: off
    assert isinstance(a, Dispatch) and isinstance(b, Dispatch)
    sync()
    assert cores[0].request_arrived(RequestInfo("a1", "sa2", 0.1, tenant_id="alpha")) == []  # held: on
    now[0] = 400.0  # beta quiet past the window (300 s)
    cores[0].request_finished("a0", Usage(100, 10))
    cores[1].request_finished("b0", Usage(100, 10))
    sync()
    (a2,) = cores[0].request_arrived(RequestInfo("a2", "sa3", now[0], tenant_id="alpha"))
    assert isinstance(a2, Dispatch)  # off again


def test_workers_share_the_release_queues_bound(tmp_path: Path) -> None:
    """`max_queued` bounded each worker's own calls: with two workers the proxy held twice as many before
    its 429. Each worker now has its share, and borrows past it while the workers' total has room."""
    now = [0.0]
    cores, sync = _queued_workers(tmp_path, now, max_queued=4)
    assert isinstance(cores[0].request_arrived(RequestInfo("busy", "s-busy", 0.0)), list)
    sync()  # (each worker knows the other is live, and the busy call)
    for n in range(4):  # worker 0 borrows the whole bound: worker 1 holds nothing
        assert cores[0].request_arrived(RequestInfo(f"a{n}", f"sa{n}", 0.0)) == []
    # no sync: the counts are read as they are (a burst within one sync period took the bound N times)
    for n in range(2):  # worker 1's share: 2
        assert cores[1].request_arrived(RequestInfo(f"b{n}", f"sb{n}", 0.0)) == []
    (refused,) = cores[1].request_arrived(RequestInfo("b2", "sb2", 0.0))
    assert isinstance(refused, Reject) and refused.status == 429
    (refused,) = cores[0].request_arrived(RequestInfo("a4", "sa4", 0.0))
    assert isinstance(refused, Reject) and refused.status == 429
