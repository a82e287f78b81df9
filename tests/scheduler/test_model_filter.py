"""Routing by model inside the scheduler: when some replica serves the model a call names, no decision sends
it to one that does not (it would answer 404): not admission's choice among the replicas with room, not
work stealing's idle replica, not a retry's remaining ones."""

from __future__ import annotations

import msgspec

from proxy.model_routing import ModelFilter, ReplicaModels, for_model
from proxy.scheduler import Dispatch, Reject, ReplicaStats, RequestInfo, SchedulerCore, Usage, build_policy
from tests.clocks import Clock
from tests.scheduler.test_saga_policy import CAPACITY, call, only_dispatch, seen_back


def fleet(policy: str = "saga", unknown: bool = False) -> tuple[SchedulerCore, Clock]:
    """r0 serves `chat`, r1 `embed` (and r2, with `unknown`, has not been probed yet)."""
    models = ReplicaModels()
    models.update("r0", frozenset({"chat"}))
    models.update("r1", frozenset({"embed"}))
    built = build_policy(policy, seed=0)
    built.filters.append(ModelFilter(models))
    clock = Clock()
    ids = ["r0", "r1", "r2"] if unknown else ["r0", "r1"]
    core = SchedulerCore(ids, built, clock)
    for r in ids:
        core.replica_stats(ReplicaStats(r, kv_capacity_tokens=CAPACITY))
    return core, clock


def chat(session: str, prompt_tokens: int = 10_000) -> RequestInfo:
    return msgspec.structs.replace(call(session, prompt_tokens), model="chat")


def test_a_new_workflow_waits_for_room_on_a_replica_serving_its_model() -> None:
    core, _ = fleet()
    assert core.admission is not None
    fits = int(CAPACITY * core.admission.spec.overcommit) // core.admission.footprint_of_new(
        chat("x", 30_000)
    )
    for i in range(fits):
        assert only_dispatch(core.request_arrived(chat(f"s{i}", 30_000))).replica_id == "r0"
    # r0 is full and r1 has room, but r1 serves another model: the workflow waits
    assert core.request_arrived(chat("late", 30_000)) == []
    assert core.admission.is_waiting("late")


def test_a_workflow_of_another_model_is_not_held_behind_one_waiting_for_its_own() -> None:
    """Admission has one queue; a head waiting for room on its model's replicas blocks only its model."""
    core, clock = fleet()
    assert core.admission is not None
    seen_back(core, model="chat")
    seen_back(core, model="embed")
    size = 30_000
    fits = int(CAPACITY * core.admission.spec.overcommit) // core.admission.footprint_of_new(chat("x", size))
    firsts = [chat(f"s{i}", size) for i in range(fits)]
    for req in firsts:
        assert only_dispatch(core.request_arrived(req)).replica_id == "r0"
    assert core.request_arrived(late := chat("late", size)) == []  # r0 is full: it waits
    embed = msgspec.structs.replace(call("e0", size), model="embed")
    assert only_dispatch(core.request_arrived(embed)).replica_id == "r1"  # before: it waited behind "late"
    # r1 full too: the next embed workflow waits, and a second chat one keeps its place behind "late"
    embeds = [msgspec.structs.replace(call(f"e{i}", size), model="embed") for i in range(1, fits)]
    for req in embeds:
        assert only_dispatch(core.request_arrived(req)).replica_id == "r1"
    assert (
        core.request_arrived(waiting_embed := msgspec.structs.replace(call("e-late", size), model="embed"))
        == []
    )
    assert core.request_arrived(chat("later", size)) == []
    # room on r1 (an embed workflow ends): its waiting workflow goes, though "late" still heads the queue
    clock.now = 1.0
    core.request_finished(embed.request_id, Usage(size, 10, finish_reason="stop"))
    freed = core.session_ended(embed.session_id)
    assert [d.request_id for d in freed if isinstance(d, Dispatch)] == [waiting_embed.request_id]
    assert core.admission.is_waiting("late") and core.admission.is_waiting("later")
    # room on r0 for one: the chat workflow first in line goes
    core.request_finished(firsts[0].request_id, Usage(size, 10, finish_reason="stop"))
    freed = core.session_ended(firsts[0].session_id)
    assert [d.request_id for d in freed if isinstance(d, Dispatch)] == [late.request_id]
    assert core.admission.is_waiting("later")


def test_work_stealing_does_not_move_a_call_to_an_idle_replica_of_another_model() -> None:
    core, clock = fleet()
    first = only_dispatch(core.request_arrived(req := chat("a", 2_000)))
    assert first.replica_id == "r0"
    clock.now = 1.0
    core.request_finished(req.request_id, Usage(2_000, 100, finish_reason="tool_calls"))
    core.replica_stats(ReplicaStats("r0", waiting=20, running=2))  # a long engine queue; r1 idle
    assert only_dispatch(core.request_arrived(chat("a", 3_000))).replica_id == "r0"
    assert core.moves == 0


def test_a_failed_call_is_not_retried_on_a_replica_of_another_model() -> None:
    for policy in ("saga", "round-robin", "least-request", "session-affinity"):
        core, _ = fleet(policy)
        d = only_dispatch(core.request_arrived(chat("s")))
        assert d.replica_id == "r0"
        (refused,) = core.dispatch_failed(d.request_id, replica_down=False)
        assert isinstance(refused, Reject) and refused.status == 503, policy
        assert not core.in_flight


def test_a_model_no_replica_lists_goes_anywhere_and_unprobed_replicas_stay_candidates() -> None:
    core, _ = fleet("round-robin")
    unlisted = [msgspec.structs.replace(call(f"u{i}"), model="other") for i in range(4)]
    assert {only_dispatch(core.request_arrived(r)).replica_id for r in unlisted} == {"r0", "r1"}
    core, _ = fleet("round-robin", unknown=True)
    got = {only_dispatch(core.request_arrived(chat(f"c{i}"))).replica_id for i in range(6)}
    assert got == {"r0", "r2"}  # r2's models are not known yet: it may serve chat
    d = only_dispatch(core.request_arrived(chat("retry")))
    (retry,) = core.dispatch_failed(d.request_id, replica_down=False)
    assert isinstance(retry, Dispatch) and retry.replica_id in {"r0", "r2"} - {d.replica_id}


def test_the_model_map_lists_what_replicas_serve_and_forgets_replicas_gone() -> None:
    models = ReplicaModels()
    models.update("r0", frozenset({"chat"}))
    models.update("r1", frozenset({"embed", "chat"}))
    assert set(models.serving) == {"chat", "embed"}
    ids = ["r0", "r1", "r2"]
    assert for_model(models, "embed", ids, str) == ["r1", "r2"]  # r2 not probed yet: it may serve it
    assert for_model(models, "embed", ["r0"], str) == []  # the replicas with room serve another model
    assert for_model(models, "other", ["r0"], str) == ["r0"]  # no replica lists it: the replica's 404
    assert for_model(models, None, ids, str) == ids
    models.keep_only(["r0"])  # r1 removed
    assert models.by_replica == {"r0": frozenset({"chat"})} and set(models.serving) == {"chat"}
    assert for_model(models, "embed", ["r0"], str) == ["r0"]


def test_a_bound_sessions_call_refused_for_want_of_its_models_replica_says_so() -> None:
    """r0 (its model's only replica) drained, r1 up serving another model: the 503 said "1 being drained,
    the others down" (a heterogeneous fleet's review)."""
    for policy in ("saga", "session-affinity"):
        core, clock = fleet(policy)
        first = chat("agent")
        assert only_dispatch(core.request_arrived(first)).replica_id == "r0"
        clock.now += 1.0
        core.request_finished(first.request_id, Usage(10_000, 10, finish_reason="tool_calls"))
        core.draining.add("r0")
        core.replica_stats(ReplicaStats("r0", healthy=False))
        (refused,) = core.request_arrived(chat("agent"))
        assert isinstance(refused, Reject) and refused.status == 503, policy
        assert refused.reason == "no healthy replica serves the model this call names", policy


def test_the_small_replica_of_its_model_runs_a_workflow_larger_than_it_when_another_model_has_room() -> None:
    """r0 (model `chat`) small, r1 (model `embed`) large with room: a `chat` workflow larger than r0's limit
    waited for ever, passed over for "a replica with room under its limit" that serves another model (a
    review of the mixed-fleet rules)."""
    core, _ = fleet()
    core.replica_stats(ReplicaStats("r0", kv_capacity_tokens=1_500))
    assert core.admission is not None
    seen_back(core)  # (its warm-up session names no model: it may go to either replica)
    first = chat("a", prompt_tokens=1_400)
    assert core.admission.footprint_of_new(first) > 1_500 * core.admission.spec.overcommit
    assert only_dispatch(core.request_arrived(first)).replica_id == "r0"


def test_a_prompt_past_its_models_only_replica_goes_there_at_once_though_another_model_takes_it() -> None:
    """The prompt larger than the KV of its model's only replica waited for ever: another model's larger
    replica "took" it, so it was not past every replica (a review); it goes at once, for the replica's 400."""
    core, _ = fleet()
    core.replica_stats(ReplicaStats("r0", kv_capacity_tokens=2_560))
    assert only_dispatch(core.request_arrived(chat("huge", prompt_tokens=2_800))).replica_id == "r0"
