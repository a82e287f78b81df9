"""Admission's edges, found by the fourth adversarial review (2026-12-06): calls that waited for ever, a
session's count that went below zero, and room that was not there. Each test fails on the core before its fix
(main at 2d83a79); the review's HTTP reproductions are in docs/results/reliability.md."""

from __future__ import annotations

import msgspec

from proxy.model_routing import ModelFilter, ReplicaModels
from proxy.scheduler import Dispatch, Reject, ReplicaStats, Usage
from proxy.scheduler.admission import AdmissionSpec
from proxy.scheduler.registry import PluginSpec
from proxy.scheduler.release import ReleaseQueueSpec
from tests.scheduler.test_saga_policy import CAPACITY, call, make_core, only_dispatch, saga_spec
from tests.scheduler.test_shared_bound import Counts

USAGE = Usage(prompt_tokens=10_000, completion_tokens=100, finish_reason="tool_calls")


def _fill(core: object, session: str = "filler") -> Dispatch:
    """A workflow whose footprint takes r0's whole room (one replica, overcommit 1)."""
    return only_dispatch(core.request_arrived(call(session, prompt_tokens=CAPACITY - 1_000)))  # type: ignore[attr-defined]


def _one_replica(**admission: object) -> tuple:  # type: ignore[type-arg]
    spec = saga_spec(admission=AdmissionSpec(overcommit=1.0, **admission))  # type: ignore[arg-type]
    return make_core(replicas=1, spec=spec)


def test_a_prompt_larger_than_every_replicas_kv_goes_at_once_and_holds_no_one_back() -> None:
    """No engine takes a prompt past its KV (vLLM's context is at most its KV): waiting for room, it waited
    until a replica had nothing reserved, and every workflow queued behind it, any tenant's, with it."""
    core, clock = _one_replica()
    filler = _fill(core)
    huge = call("huge", prompt_tokens=2 * CAPACITY, tenant="a")
    assert only_dispatch(core.request_arrived(huge)).replica_id == "r0"  # no wait: the replica answers it
    small = call("small", prompt_tokens=1_000, tenant="b")
    assert core.request_arrived(small) == []  # r0 is full: it waits, as it should
    clock.now = 1.0
    assert core.request_finished(huge.request_id, None) == []  # refused: its reservation lapses
    released = core.request_finished(filler.request_id, USAGE)
    assert [d.request_id for d in released] == [small.request_id]


def test_a_prompt_past_every_replica_queued_behind_others_is_let_through_at_the_head() -> None:
    core, clock = _one_replica()
    filler = _fill(core)
    first = call("first", prompt_tokens=1_000)
    huge = call("huge", prompt_tokens=2 * CAPACITY)
    behind = call("behind", prompt_tokens=1_000)
    for c in (first, huge, behind):
        assert core.request_arrived(c) == []  # something waits already: each queues
    clock.now = 1.0
    released = core.request_finished(filler.request_id, USAGE)
    assert [d.request_id for d in released] == [first.request_id, huge.request_id]
    assert core.admission is not None and core.admission.is_waiting("behind")
    assert [d.request_id for d in core.request_finished(huge.request_id, None)] == [behind.request_id]


def test_parallel_calls_of_a_waiting_workflow_go_with_it_when_it_is_admitted() -> None:
    """A fan-out sent before the workflow was admitted: its first call was admitted, the other two waited
    behind the queue's next head (another tenant's, which did not fit) until their clients gave up."""
    core, clock = _one_replica()
    filler = _fill(core)
    fan = [call("fan", prompt_tokens=2_000, tenant="a") for _ in range(3)]
    for c in fan:
        assert core.request_arrived(c) == []
    blocker = call("blocker", prompt_tokens=CAPACITY - 1_000, tenant="b")  # fits only an empty replica
    assert core.request_arrived(blocker) == []
    clock.now = 1.0
    released = core.request_finished(filler.request_id, USAGE)
    assert sorted(d.request_id for d in released) == sorted(c.request_id for c in fan)
    assert all(isinstance(d, Dispatch) and d.replica_id == "r0" for d in released)
    assert core.admission is not None and not core.admission.is_waiting("fan")
    assert core.admission.is_waiting("blocker")


def test_a_call_that_outlives_its_ended_session_does_not_count_against_a_new_one_of_the_same_id() -> None:
    """The session ended (X-Session-End, the admin API) while a call of it ran, and its id was sent again:
    the old call's end was subtracted from the new session (in flight -1 for good, never idle, never
    forgotten)."""
    core, clock = make_core(replicas=2, session_idle_ttl_s=10.0)
    old = only_dispatch(core.request_arrived(call("s")))
    core.session_ended("s")
    new = only_dispatch(core.request_arrived(call("s")))
    core.request_finished(old.request_id, USAGE)
    assert core.sessions["s"].in_flight == 1  # the new call's, still running
    core.request_finished(new.request_id, USAGE)
    assert core.sessions["s"].in_flight == 0
    clock.now = 100.0
    core.tick()
    assert "s" not in core.sessions
    assert core.admission is not None and "s" not in core.admission.workflows


def test_waiting_calls_are_refused_once_no_replica_is_left_for_them() -> None:
    """Every replica removed or down: a new call got a 503 at once, one already waiting got nothing until
    `max_wait_s` (or never, without it)."""
    core, clock = make_core(
        replicas=2, spec=saga_spec(admission=AdmissionSpec(overcommit=1.0, max_wait_s=None))
    )
    for r in ("r0", "r1"):
        _fill_on = only_dispatch(core.request_arrived(call(f"fill-{r}", prompt_tokens=CAPACITY - 5_000)))
        assert _fill_on.replica_id in ("r0", "r1")
    first, second = call("w1"), call("w2")
    assert core.request_arrived(first) == [] and core.request_arrived(second) == []
    assert core.replica_stats(ReplicaStats("r0", healthy=False)) == []  # r1 may still take them
    core.remove_replica("r1")
    clock.now = 1.0
    refused = core.tick()
    assert sorted(d.request_id for d in refused) == sorted([first.request_id, second.request_id])
    assert all(isinstance(d, Reject) and d.status == 503 for d in refused)
    assert core.admission is not None and not len(core.admission.waiting)


def test_a_replica_going_down_refuses_the_waiting_calls_at_once_when_it_was_the_last() -> None:
    core, _ = _one_replica()
    _fill(core)
    waiting = call("w")
    assert core.request_arrived(waiting) == []
    (refused,) = core.replica_stats(ReplicaStats("r0", healthy=False))
    assert isinstance(refused, Reject) and refused.request_id == waiting.request_id and refused.status == 503
    assert "w" not in core.sessions  # never started: nothing kept of it


def test_a_replica_added_at_run_time_takes_no_workflow_before_a_probe_reports_its_kv() -> None:
    """Added through the admin API or discovery, a replica's capacity is unknown until probed, which reads
    as room for anything: six waiting workflows went there at once, three times its KV."""
    core, clock = _one_replica()
    filler = _fill(core)
    waiting = [call(f"w{i}", prompt_tokens=40_000) for i in range(6)]
    for c in waiting:
        assert core.request_arrived(c) == []
    core.add_replica("r1")
    clock.now = 1.0
    assert core.tick() == []  # down until probed
    admitted = core.replica_stats(ReplicaStats("r1", healthy=True, kv_capacity_tokens=CAPACITY))
    assert core.admission is not None
    assert 0 < len(admitted) < 6
    assert core.admission.reserved["r1"] <= CAPACITY
    assert filler.replica_id == "r0"


def test_ending_a_session_while_its_call_waits_ends_it_once_that_call_is_done() -> None:
    """The end answered `ended: true`, but with a call waiting the session was kept, and nothing ended it
    after that call was served: it stayed listed, its workflow holding KV."""
    core, clock = _one_replica()
    filler = _fill(core)
    waiting = call("e", prompt_tokens=2_000)
    assert core.request_arrived(waiting) == []
    assert core.session_ended("e") == []
    assert "e" in core.sessions  # its call still waits: it is answered first
    clock.now = 1.0
    (admitted,) = core.request_finished(filler.request_id, USAGE)
    assert admitted.request_id == waiting.request_id
    core.request_finished(waiting.request_id, USAGE)
    assert "e" not in core.sessions
    assert core.admission is not None and "e" not in core.admission.workflows


def test_ending_a_session_whose_waiting_call_is_withdrawn_ends_it_then() -> None:
    core, _ = _one_replica()
    _fill(core)
    waiting = call("e", prompt_tokens=2_000)
    assert core.request_arrived(waiting) == []
    core.session_ended("e")
    core.request_cancelled(waiting.request_id)
    assert "e" not in core.sessions


def test_a_burst_past_max_sessions_shrinks_back_with_the_next_new_sessions() -> None:
    """Sessions busy when the table filled cannot be evicted then; one eviction per new session afterwards
    kept the table at the burst's size until the idle TTL (an hour)."""
    core, _ = make_core(replicas=2, capacity=None, max_sessions=20)
    burst = [only_dispatch(core.request_arrived(call(f"b{i}"))) for i in range(100)]
    assert len(core.sessions) == 100  # all in flight: none could go
    for d in burst:
        core.request_finished(d.request_id, USAGE)
    for i in range(12):
        only_dispatch(core.request_arrived(call(f"n{i}")))
    assert len(core.sessions) <= 20


def test_a_burst_past_max_sessions_is_evicted_by_the_next_tick_once_idle() -> None:
    core, clock = make_core(replicas=2, capacity=None, max_sessions=20)
    burst = [only_dispatch(core.request_arrived(call(f"b{i}"))) for i in range(100)]
    for d in burst:
        core.request_finished(d.request_id, USAGE)
    clock.now = 1.0
    core.tick()
    assert len(core.sessions) == 20


def test_one_tenant_opening_sessions_past_max_sessions_evicts_its_own_not_another_tenants() -> None:
    """The table is shared: a new session past `max_sessions` evicted the least recently seen idle one of any
    tenant, so with client API keys one tenant opening 1,200 sessions took another tenant's workflow while
    it waited on a tool call (its replica, reservation and learned progress). A tenant over an equal share
    of the table now gives up its own first."""
    core, _ = make_core(replicas=2, capacity=None, max_sessions=20)
    waiting = only_dispatch(core.request_arrived(call("b:agent", tenant="beta")))
    core.request_finished(waiting.request_id, USAGE)  # idle between calls (a tool call)
    for i in range(60):
        d = only_dispatch(core.request_arrived(call(f"a:s{i}", tenant="alpha")))
        core.request_finished(d.request_id, USAGE)
    assert "b:agent" in core.sessions and len(core.sessions) <= 20
    for i in range(60):  # alone, a tenant's sessions are evicted oldest first, as before
        d = only_dispatch(core.request_arrived(call(f"a:t{i}", tenant="alpha")))
        core.request_finished(d.request_id, USAGE)
    assert "a:t59" in core.sessions and "a:s0" not in core.sessions


def test_a_refused_first_call_leaves_no_session_behind() -> None:
    """Each 429 or 503 of a new session's first call filed a session, kept for the idle TTL."""
    core, _ = make_core(replicas=1, spec=saga_spec(admission=AdmissionSpec(overcommit=1.0, max_waiting=1)))
    _fill(core)
    assert core.request_arrived(call("w")) == []
    for i in range(17):
        (refused,) = core.request_arrived(call(f"r{i}"))
        assert isinstance(refused, Reject) and refused.status == 429
    assert sorted(core.sessions) == ["filler", "w"]


def _two_models() -> tuple:  # type: ignore[type-arg]
    """r0 serves `m1`, r1 `m2` (routing by model, as the shell adds it); both full."""
    models = ReplicaModels()
    models.update("r0", frozenset({"m1"}))
    models.update("r1", frozenset({"m2"}))
    spec = saga_spec(admission=AdmissionSpec(overcommit=1.0))
    core, clock = make_core(replicas=2, spec=spec)
    core.policy.filters.append(ModelFilter(models))
    for r, m in (("r0", "m1"), ("r1", "m2")):
        fill = msgspec.structs.replace(call(f"fill-{r}", prompt_tokens=CAPACITY - 1_000), model=m)
        assert only_dispatch(core.request_arrived(fill)).replica_id == r
    return core, clock


def test_a_workflow_whose_models_replicas_are_all_down_is_refused_not_kept_waiting() -> None:
    """The only replica of `m2` drained: a new `m2` workflow waited (until its client gave up), and one
    already waiting stayed there, while `m1`'s replica was up."""
    core, _ = _two_models()
    waiting = msgspec.structs.replace(call("w2"), model="m2")
    assert core.request_arrived(waiting) == []
    (refused,) = core.replica_stats(ReplicaStats("r1", healthy=False))
    assert isinstance(refused, Reject) and refused.request_id == waiting.request_id and refused.status == 503
    (new,) = core.request_arrived(msgspec.structs.replace(call("n2"), model="m2"))
    assert isinstance(new, Reject) and new.status == 503
    assert core.request_arrived(msgspec.structs.replace(call("n1"), model="m1")) == []  # m1: waits for room


def test_waiting_calls_are_refused_at_the_next_tick_once_a_call_finds_the_last_replica_down() -> None:
    """A call that could not reach its replica marks it down with no health report; the waiting calls go
    with the next housekeeping tick (a replica reported down every round refuses them once, when it goes)."""
    core, clock = _one_replica()
    filler = _fill(core)
    waiting = call("w")
    assert core.request_arrived(waiting) == []
    retried = core.dispatch_failed(filler.request_id, replica_down=True)
    assert isinstance(retried[0], Reject)  # nowhere else to go
    clock.now = 1.0
    (refused,) = core.tick()
    assert isinstance(refused, Reject) and refused.request_id == waiting.request_id and refused.status == 503
    assert core.replica_stats(ReplicaStats("r0", healthy=False)) == []  # still down: nothing left to refuse


def _queued_core(max_queued: int = 10_000, replicas: int = 1) -> tuple:  # type: ignore[type-arg]
    """`saga` admission with a release queue whose gate lets one call per replica in flight."""
    gate = PluginSpec("max-in-flight-gate", params={"max_in_flight": 1})
    spec = saga_spec(
        admission=AdmissionSpec(overcommit=1.0, max_hold_s=0.5),
        queue=ReleaseQueueSpec(gate=gate, max_queued=max_queued),
    )
    return make_core(replicas=replicas, spec=spec, session_idle_ttl_s=3600.0)


def test_a_held_call_whose_client_leaves_lets_its_new_workflows_reservation_go() -> None:
    """Admitted, then held in the release queue behind the gate, then withdrawn: nothing lapsed the new
    workflow's reservation (no call in flight, no hold running) but the session's idle TTL, an hour."""
    core, clock = _queued_core()
    busy = only_dispatch(core.request_arrived(call("busy", prompt_tokens=1_000)))
    held = call("held", prompt_tokens=20_000)
    assert core.request_arrived(held) == []  # admitted, held behind the gate
    assert core.admission is not None and core.admission.workflows["held"].reserved > 0
    assert core.request_cancelled(held.request_id) == []
    # none of its calls served: forgotten with its call, its reservation with it
    assert "held" not in core.admission.workflows and "held" not in core.sessions
    clock.now = 1.0
    core.request_finished(busy.request_id, USAGE)


def test_a_call_its_replica_failed_and_no_other_could_take_lets_its_reservation_go() -> None:
    """The replica died under a new workflow's first call: the client's 503 was right, but the workflow kept
    its reservation, and the replica, back and empty, made the next new workflow wait."""
    core, _ = _one_replica()
    first = only_dispatch(core.request_arrived(call("first", prompt_tokens=CAPACITY - 1_000)))
    (refused,) = core.dispatch_failed(first.request_id, replica_down=True)
    assert isinstance(refused, Reject) and refused.status == 503
    assert core.admission is not None and core.admission.reserved["r0"] == 0
    core.replica_stats(ReplicaStats("r0", healthy=True))
    only_dispatch(core.request_arrived(call("next", prompt_tokens=CAPACITY - 1_000)))


def test_a_retry_after_its_replica_failed_is_held_past_the_queues_bound() -> None:
    """A running call whose replica died went back through the bounded queue and got a 429 while later
    calls were served: it was accepted already."""
    core, _ = _queued_core(max_queued=1, replicas=2)
    running = [only_dispatch(core.request_arrived(call(f"run{i}", prompt_tokens=1_000))) for i in range(2)]
    assert core.request_arrived(call("later", prompt_tokens=1_000)) == []  # held: the queue is full now
    retried = core.dispatch_failed(running[0].request_id, replica_down=True)
    assert retried == []  # held for the other replica, not refused
    assert core.release is not None and core.release.holds_session("run0")


def test_a_session_ended_while_its_held_call_waits_is_forgotten_when_that_call_is_refused() -> None:
    """Ended while its call was held, then its replica drained: the held call got its 503, and the session
    stayed (its reservation until the hold lapsed, itself until the idle TTL)."""
    core, clock = _queued_core()
    first = only_dispatch(core.request_arrived(call("s", prompt_tokens=1_000)))
    clock.now = 1.0
    core.request_finished(first.request_id, USAGE)
    only_dispatch(core.request_arrived(call("busy", prompt_tokens=1_000)))
    held = call("s", prompt_tokens=2_000)
    assert core.request_arrived(held) == []  # behind the gate
    assert core.session_ended("s") == [] and "s" in core.sessions
    refused = core.replica_stats(ReplicaStats("r0", healthy=False))
    assert [(d.request_id, d.status) for d in refused if isinstance(d, Reject)] == [(held.request_id, 503)]
    assert "s" not in core.sessions


def test_a_full_release_queue_gives_a_light_tenant_a_place_by_pushing_out_the_floods_newest() -> None:
    """The queue's bound was shared first come: a flood retrying at once after each 429 kept it full, and a
    light tenant's calls were all refused (10 of 10 with `max_queued: 5`) while the flood was served."""
    core, _ = _queued_core(max_queued=4)
    only_dispatch(core.request_arrived(call("busy", prompt_tokens=100, tenant="flood")))
    flood = [call(f"f{i}", prompt_tokens=100, tenant="flood") for i in range(4)]
    for c in flood:
        assert core.request_arrived(c) == []  # held behind the gate
    (refused,) = core.request_arrived(call("f-more", prompt_tokens=100, tenant="flood"))
    assert isinstance(refused, Reject) and refused.status == 429  # the flood holds every place
    light = [call(f"l{i}", prompt_tokens=100, tenant="light") for i in range(3)]
    (pushed,) = core.request_arrived(light[0])
    assert isinstance(pushed, Reject) and pushed.request_id == flood[-1].request_id and pushed.status == 429
    (pushed,) = core.request_arrived(light[1])
    assert isinstance(pushed, Reject) and pushed.request_id == flood[-2].request_id
    (refused,) = core.request_arrived(light[2])  # two each: the light tenant has its share
    assert isinstance(refused, Reject) and refused.request_id == light[2].request_id
    assert core.release is not None and len(core.release) == 4
    assert core.replicas["r0"].queued == 4


def test_with_workers_room_goes_in_turn_to_a_worker_with_workflows_waiting() -> None:
    """A worker whose calls freed room admitted its own next workflow in the same step, every time, so a
    flood owned by one worker kept another worker's tenant waiting until it stopped (12-14 s against 0.7 s
    in one process). Now a worker that admitted since another began waiting leaves it the next room."""
    core, clock = _one_replica()
    clock.now = 1.0
    assert core.foreign_waiting(1, {1: 5}) == []  # worker 1 waits, having admitted 5 so far
    only_dispatch(core.request_arrived(call("first", prompt_tokens=1_000)))  # this worker's turn
    second = call("second", prompt_tokens=1_000)
    assert core.request_arrived(second) == []  # room, but worker 1's turn
    assert core.foreign_waiting(1, {1: 5}) == []  # still its turn
    (admitted,) = core.foreign_waiting(1, {1: 6})  # worker 1 took it: this one goes
    assert admitted.request_id == second.request_id


def test_a_turn_is_left_to_another_worker_for_a_bounded_time() -> None:
    core, clock = _one_replica()
    clock.now = 1.0
    core.foreign_waiting(1, {1: 5})
    only_dispatch(core.request_arrived(call("first", prompt_tokens=1_000)))
    second = call("second", prompt_tokens=1_000)
    assert core.request_arrived(second) == []
    clock.now = 1.1
    assert core.foreign_waiting(1, {1: 5}) == []
    clock.now = 1.4  # worker 1's head fits nowhere, it seems: this one goes
    assert [d.request_id for d in core.foreign_waiting(1, {1: 5})] == [second.request_id]


def test_a_turn_left_and_never_taken_does_not_shorten_the_next() -> None:
    """The call that waited for worker 1's turn left, and worker 1 stopped waiting: the next turn, much
    later, counted from that first wait and was no turn at all."""
    core, clock = _one_replica()
    clock.now = 1.0
    core.foreign_waiting(1, {1: 5})
    only_dispatch(core.request_arrived(call("first", prompt_tokens=1_000)))
    second = call("second", prompt_tokens=1_000)
    assert core.request_arrived(second) == []  # worker 1's turn
    core.request_cancelled(second.request_id)
    assert core.foreign_waiting(0, {}) == []
    clock.now = 3.0
    core.foreign_waiting(1, {1: 5})
    assert core.request_arrived(call("third", prompt_tokens=1_000)) == []  # worker 1's turn, from 3.0


def test_with_workers_a_free_gate_slot_goes_in_turn_to_a_worker_holding_calls_for_it() -> None:
    """The release queue's version of admission's turns (proxy/load_sync.py gives `foreign_lanes`): this
    worker leaves the slot its call freed to another worker holding calls for that replica, for at most
    0.25 s each time."""
    core, clock = _queued_core()
    busy = only_dispatch(core.request_arrived(call("busy", prompt_tokens=100)))
    held = [call(f"h{i}", prompt_tokens=100) for i in range(4)]
    for c in held:
        assert core.request_arrived(c) == []  # behind the gate
    assert core.foreign_lanes({"r0": {1: 3}}) == []  # worker 1 holds calls for r0 too: 3 released so far
    clock.now = 1.0
    assert core.request_finished(busy.request_id, USAGE) == []  # its turn (this worker released last)
    assert core.own_load()[0][3:] == (4, 1)  # 4 held, 1 released: what the others read
    assert core.foreign_lanes({"r0": {1: 3}}) == []
    # worker 1 released into the slot, and its call ended: this worker's turn
    clock.now = 1.1
    (first,) = core.foreign_lanes({"r0": {1: 4}})
    assert first.request_id == held[0].request_id
    clock.now = 1.2
    assert core.request_finished(first.request_id, USAGE) == []  # worker 1's turn again
    clock.now = 1.5  # past 0.25 s: worker 1 cannot take it, it seems
    (second,) = core.foreign_lanes({"r0": {1: 4}})
    clock.now = 1.6
    assert core.request_finished(second.request_id, USAGE) == []  # worker 1's turn again, for 0.25 s
    clock.now = 1.7
    (third,) = core.foreign_lanes({"r0": {1: 5}})  # it released one: this worker's turn
    assert [second.request_id, third.request_id] == [h.request_id for h in held[1:3]]
    clock.now = 5.0
    assert core.foreign_lanes({}) == []  # worker 1 holds none now: nothing owed
    (last,) = core.request_finished(third.request_id, USAGE)
    assert last.request_id == held[3].request_id and core.own_load()[0][3:] == (0, 5)


def test_with_workers_the_admission_queues_bound_is_shared() -> None:
    """`max_waiting` bounded each worker's own waiting workflows: N workers let N times as many wait."""
    core, _ = _one_replica(max_waiting=4)
    _fill(core)
    waiting = Counts([0, 3])  # the other worker has 3 waiting: this one has its share, 2
    core.share_bounds(Counts([0, 0]), waiting)
    for n in range(2):
        assert core.request_arrived(call(f"w{n}", prompt_tokens=1_000)) == []
    assert waiting.held == [2, 3]  # published as it changed
    (refused,) = core.request_arrived(call("w2", prompt_tokens=1_000))
    assert isinstance(refused, Reject) and refused.status == 429
    waiting.held[1] = 0  # it has none now: this one borrows its places
    assert core.request_arrived(call("w3", prompt_tokens=1_000)) == []
