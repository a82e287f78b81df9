"""The core's sans-IO input for the other workers' load (`foreign_load`, `saga serve --workers N`): their KV
reservations count against admission's room, their calls in flight against placement and gates."""

from __future__ import annotations

import itertools

import msgspec
import pytest

from proxy.scheduler import (
    Dispatch,
    PolicySpec,
    ReplicaStats,
    RequestInfo,
    SchedulerCore,
    Usage,
    build_policy,
)
from proxy.scheduler.admission import AdmissionSpec
from proxy.scheduler.registry import PluginSpec
from proxy.scheduler.release import ReleaseQueueSpec
from tests.scheduler.test_saga_policy import CAPACITY, call, make_core, only_dispatch, saga_spec, seen_back

_ids = itertools.count()


def test_a_new_workflow_is_admitted_where_another_worker_reserved_only_when_it_fits_the_rest() -> None:
    core, _ = make_core(replicas=1)
    assert core.admission is not None
    req = call("new", prompt_tokens=20_000)
    footprint = core.admission.footprint_of_new(req)
    limit = int(CAPACITY * core.admission.spec.overcommit)
    assert core.foreign_load("r0", limit - footprint + 1, 0) == []  # one token short
    assert core.request_arrived(req) == []
    assert core.admission.is_waiting("new")
    admitted = core.foreign_load("r0", limit - footprint, 0)  # the other worker freed a token: it fits
    assert only_dispatch(admitted).replica_id == "r0"
    assert core.replicas["r0"].reserved_tokens == limit
    # what this worker publishes is its own reservation alone
    assert core.own_load() == [("r0", footprint, 1, 0, 0)]
    assert core.snapshot()["admission"]["reserved_tokens"] == {"r0": footprint}
    assert core.snapshot()["admission"]["foreign_reserved_tokens"] == {"r0": limit - footprint}


def test_a_replica_another_worker_holds_anything_on_is_not_empty_for_a_workflow_larger_than_it() -> None:
    admission = AdmissionSpec(overcommit=0.5)  # a prompt the replica's KV holds, a footprint past its room
    core, _ = make_core(replicas=1, spec=saga_spec(admission=admission))
    big = call("big", prompt_tokens=CAPACITY)
    core.foreign_load("r0", 1, 0)
    assert core.request_arrived(big) == []  # "alone" means alone across the workers
    assert only_dispatch(core.foreign_load("r0", 0, 0)).replica_id == "r0"


@pytest.mark.parametrize("busy", ["r0", "r1"])
def test_a_new_workflow_goes_to_the_replica_the_other_workers_load_less(busy: str) -> None:
    core, _ = make_core(replicas=2)
    core.foreign_load(busy, 0, 6)
    assert core.replicas[busy].in_flight == 6
    placed = only_dispatch(core.request_arrived(call("s")))
    assert placed.replica_id != busy
    reserved = core.admission.own_reserved  # type: ignore[union-attr]
    assert core.own_load() == [(r, reserved(r), int(r != busy), 0, 0) for r in ("r0", "r1")]


@pytest.mark.parametrize("busy", ["r0", "r1"])
def test_without_admission_load_scoring_counts_the_other_workers_calls(busy: str) -> None:
    clock = lambda: 0.0  # noqa: E731
    core = SchedulerCore(["r0", "r1"], build_policy("least-request", seed=0), clock)
    core.foreign_load(busy, 0, 3)
    req = RequestInfo(request_id="q", session_id="s", arrived_at=0.0)
    assert only_dispatch(core.request_arrived(req)).replica_id != busy
    core.request_finished("q", Usage())
    assert core.replicas[busy].in_flight == 3 and core.own_load() == [("r0", 0, 0, 0, 0), ("r1", 0, 0, 0, 0)]


def test_a_held_call_goes_when_the_other_workers_calls_leave_room_under_the_gate() -> None:
    spec = PolicySpec(
        picker=PluginSpec("max-score-picker"),
        scorers=[PluginSpec("least-request-scorer")],
        queue=ReleaseQueueSpec(gate=PluginSpec("max-in-flight-gate", params={"max_in_flight": 2})),
    )
    core = SchedulerCore(["r0"], build_policy(spec, seed=0), lambda: 0.0)
    core.foreign_load("r0", 0, 2)  # the other workers fill the replica's gate
    assert core.request_arrived(RequestInfo(request_id="q", session_id="s", arrived_at=0.0)) == []
    assert core.foreign_load("r0", 0, 2) == []
    (released,) = core.foreign_load("r0", 0, 1)
    assert isinstance(released, Dispatch) and released.request_id == "q"
    assert core.replicas["r0"].in_flight == 2 and core.own_load() == [("r0", 0, 1, 0, 1)]


def test_foreign_load_of_an_unknown_replica_is_ignored_and_a_removed_one_starts_over() -> None:
    core, _ = make_core(replicas=2)
    assert core.foreign_load("elsewhere", 5, 5) == []
    core.foreign_load("r1", 50_000, 4)
    core.remove_replica("r1")
    core.add_replica("r1")
    view = core.replicas["r1"]
    assert (view.in_flight, view.reserved_tokens, view.foreign_in_flight, view.foreign_reserved_tokens) == (
        0,
        0,
        0,
        0,
    )
    assert core.admission is not None and core.admission.own_reserved("r1") == 0


def test_a_call_ending_after_its_replica_was_removed_reserves_nothing_there() -> None:
    """The replica left the set while the call ran on it: its workflow's reservation went with it, and the
    call's end must not bring one back, or the replica, added again, admits against KV no workflow holds."""
    core, _ = make_core(replicas=2)
    assert core.admission is not None
    running = only_dispatch(core.request_arrived(call("s")))
    core.remove_replica(running.replica_id)
    core.request_finished(running.request_id, Usage(prompt_tokens=10_000, completion_tokens=500))
    core.add_replica(running.replica_id)
    assert core.admission.reserved.get(running.replica_id, 0) == 0
    assert core.replicas[running.replica_id].reserved_tokens == 0
    assert core.snapshot()["admission"]["live"] == 0
    # its next call lands somewhere and reserves there again
    again = only_dispatch(core.request_arrived(call("s")))
    assert core.admission.reserved[again.replica_id] > 0


def test_calls_running_on_a_replica_removed_and_added_back_are_counted_once() -> None:
    """An operator takes a replica out and puts it back while calls run on it: the view counts them again,
    and their ends bring it to 0, not below (it went to -3 and stayed there)."""
    core, _ = make_core(replicas=2)
    running = [only_dispatch(core.request_arrived(call(f"s{i}"))) for i in range(4)]
    replica_id = running[0].replica_id
    on_it = sum(r.replica_id == replica_id for r in running)
    core.remove_replica(replica_id)
    core.add_replica(replica_id)
    core.replica_stats(ReplicaStats(replica_id, healthy=True, kv_capacity_tokens=CAPACITY))  # probed up
    assert core.replicas[replica_id].in_flight == on_it
    for r in running[:-1]:
        core.request_finished(r.request_id, Usage(prompt_tokens=100, completion_tokens=5))
    retried = only_dispatch(core.dispatch_failed(running[-1].request_id, replica_down=False))
    core.request_finished(retried.request_id, Usage(prompt_tokens=100, completion_tokens=5))
    assert {v.replica_id: v.in_flight for v in core.replicas.values()} == {"r0": 0, "r1": 0}
    # taken out, its call ends while it is out, then back: nothing is carried over
    late = only_dispatch(core.request_arrived(call("late")))
    core.remove_replica(late.replica_id)
    core.request_finished(late.request_id, Usage(prompt_tokens=100, completion_tokens=5))
    core.add_replica(late.replica_id)
    assert core.replicas[late.replica_id].in_flight == 0


def test_own_figures_survive_any_interleaving_with_foreign_load() -> None:
    """The view's totals are always own + foreign; own_load gives back exactly this worker's."""
    core, clock = make_core(replicas=2)
    assert core.admission is not None
    live: list[str] = []
    for step in range(40):
        if step % 3 == 0:
            core.foreign_load(f"r{step % 2}", 1_000 * step, step % 5)
        if step % 4 == 1 and live:
            core.request_finished(live.pop(0), Usage(prompt_tokens=10_000, completion_tokens=50))
        else:
            req = call(f"s{step % 7}")
            for d in core.request_arrived(req):
                if isinstance(d, Dispatch):
                    live.append(d.request_id)
        clock.now += 1.0
        for rid, reserved, in_flight, _, _ in core.own_load():
            view = core.replicas[rid]
            assert view.in_flight == in_flight + view.foreign_in_flight
            assert in_flight == sum(1 for f in core.in_flight.values() if f.replica_id == rid)
            assert view.reserved_tokens == reserved + view.foreign_reserved_tokens
            bound = [wf for wf in core.admission.workflows.values() if wf.replica_id == rid]
            assert reserved == sum(wf.reserved for wf in bound)


def test_no_foreign_load_leaves_the_snapshot_as_in_one_process() -> None:
    core, _ = make_core(replicas=1)
    only_dispatch(core.request_arrived(call("s")))
    admission = core.snapshot()["admission"]
    assert "foreign_reserved_tokens" not in admission
    assert admission["reserved_tokens"] == dict(core.admission.reserved)  # type: ignore[union-attr]
    assert msgspec.to_builtins(core.replicas["r0"])["foreign_in_flight"] == 0


@pytest.mark.parametrize("elsewhere", [0, 2])
def test_a_cheap_hold_goes_when_workflows_wait_in_another_worker(elsewhere: int) -> None:
    """The cost-aware hold weighs the other workers' waiting workflows as work waiting for KV."""
    spec = saga_spec(admission=AdmissionSpec(overcommit=1.0, hold_price=1.0, price_max_gap_s=1e6))
    core, clock = make_core(replicas=1, spec=spec)
    assert core.admission is not None
    seen_back(core)
    for _ in range(16):
        core.admission.prefill_seen(1e-7 * 4_000, 5_000, 1_000)
    req = call("alone", prompt_tokens=60_000)
    only_dispatch(core.request_arrived(req))
    core.foreign_waiting(elsewhere)
    assert core.own_waiting() == 0
    clock.now = 1.0
    core.request_finished(req.request_id, Usage(60_000, 100, finish_reason="tool_calls"))
    assert core.admission.let_go == int(elsewhere > 0)
    assert (core.own_load()[0][1] == 0) == (elsewhere > 0)
