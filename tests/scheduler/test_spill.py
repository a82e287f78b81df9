"""Spill: calls of one workflow in parallel go to another replica when theirs has no room (hand-set clock).

Found by two reviews (docs/results/reliability.md, forty-eighth and forty-ninth sessions): 8 parallel calls of
one session all went to its replica, whose KV could not hold them, while the other idled (1.45x round-robin's
time), and an app sending one `prompt_cache_key` for all its calls was served at 0.61x round-robin's rate.
"""

from __future__ import annotations

import itertools

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.prompt_shape import output_cap
from proxy.scheduler import Decision, Dispatch, ReplicaStats, RequestInfo, SchedulerCore, Usage, build_policy
from proxy.scheduler.registry import PRESETS
from proxy.scheduler.stealing import StealingSpec, spill_target
from proxy.scheduler.types import ReplicaView
from tests.clocks import Clock

_ids = itertools.count()
CAPACITY = 10_000


def make_core(replicas: int = 2, capacity: int = CAPACITY, spill: bool = True) -> SchedulerCore:
    stealing = msgspec.structs.replace(StealingSpec(rebalance_above=1.0), spill=spill)
    spec = msgspec.structs.replace(PRESETS["saga"], stealing=stealing)
    ids = [f"r{i}" for i in range(replicas)]
    core = SchedulerCore(ids, build_policy(spec, seed=0), Clock())
    for r in ids:
        core.replica_stats(ReplicaStats(r, kv_capacity_tokens=capacity))
    return core


def call(session: str, prompt_tokens: int = 1_000, max_output_tokens: int = 1_000) -> RequestInfo:
    return RequestInfo(
        request_id=f"q{next(_ids)}",
        session_id=session,
        arrived_at=0.0,
        prompt_tokens=prompt_tokens,
        agent_type="coder",
        max_output_tokens=max_output_tokens,
    )


def only_dispatch(decisions: list[Decision]) -> Dispatch:
    (d,) = decisions
    assert isinstance(d, Dispatch), d
    return d


def finish(core: SchedulerCore, d: Dispatch) -> None:
    core.request_finished(d.request_id, Usage(prompt_tokens=1_000, completion_tokens=1_000))


def reserved_matches(core: SchedulerCore) -> None:
    """Each replica's reservations are its bound workflows', and what it counts beside them is the KV of the
    calls running there beside another of their workflow, nothing more."""
    assert core.admission is not None
    for rid, view in core.replicas.items():
        bound = sum(wf.reserved for wf in core.admission.workflows.values() if wf.replica_id == rid)
        beside = sum(f.beside for f in core.in_flight.values() if f.replica_id == rid)
        assert core.admission.reserved.get(rid, 0) == view.reserved_tokens == bound
        assert core.admission.beside.get(rid, 0) == beside


def test_parallel_calls_of_a_workflow_spill_once_its_replica_is_full_and_the_workflow_stays() -> None:
    core = make_core()
    assert core.admission is not None
    first = only_dispatch(core.request_arrived(call("fan")))
    home = first.replica_id
    fan = [only_dispatch(core.request_arrived(call("fan"))) for _ in range(7)]
    went = [d.replica_id for d in fan]
    assert home in went and any(r != home for r in went), went  # both replicas run some
    assert core.spills == sum(r != home for r in went)
    assert core.admission.workflows["fan"].replica_id == home  # bound where it was
    for d in fan:
        if d.replica_id != home:
            assert d.retain_ttl_s is None  # nothing kept for it where it spilled
    reserved_matches(core)
    for d in [first, *fan]:
        finish(core, d)
    reserved_matches(core)
    assert core.admission.beside == {}
    # its next call, alone, goes where the workflow is bound (session affinity was not moved by the spills)
    assert only_dispatch(core.request_arrived(call("fan"))).replica_id == home


def test_calls_one_at_a_time_never_spill_however_full_the_replica() -> None:
    core = make_core()
    for _ in range(10):
        d = only_dispatch(core.request_arrived(call("agent", prompt_tokens=9_000, max_output_tokens=9_000)))
        finish(core, d)
    assert core.spills == 0
    assert core.admission is not None and core.admission.beside == {}


def test_a_call_beside_another_stays_while_its_replica_has_room() -> None:
    core = make_core(capacity=1_000_000)
    first = only_dispatch(core.request_arrived(call("s")))
    side = only_dispatch(core.request_arrived(call("s")))
    assert side.replica_id == first.replica_id and core.spills == 0


def test_a_backlog_on_the_bound_replica_spills_a_call_beside_another_with_room_left() -> None:
    core = make_core(capacity=1_000_000)
    first = only_dispatch(core.request_arrived(call("s")))
    core.replica_stats(ReplicaStats(first.replica_id, waiting=5, running=1))
    side = only_dispatch(core.request_arrived(call("s", prompt_tokens=100)))
    assert side.replica_id != first.replica_id and core.spills == 1


def test_with_spill_off_every_parallel_call_goes_to_the_bound_replica() -> None:
    core = make_core(spill=False)
    first = only_dispatch(core.request_arrived(call("fan")))
    went = {only_dispatch(core.request_arrived(call("fan"))).replica_id for _ in range(7)}
    assert went == {first.replica_id}
    assert core.spills == 0
    assert core.admission is not None and core.admission.beside == {}


def test_a_call_beside_another_is_sized_by_its_cap_else_by_its_type_s_mean_answer() -> None:
    core = make_core()
    admission = core.admission
    assert admission is not None
    prior = admission.call_tokens(call("s", max_output_tokens=0))
    assert prior == 1_000 + admission.predictor.config.priors.growth_tokens
    assert admission.call_tokens(call("s", max_output_tokens=300)) == 1_300
    d = only_dispatch(core.request_arrived(call("s", max_output_tokens=0)))
    core.request_finished(d.request_id, Usage(prompt_tokens=1_000, completion_tokens=40))
    assert admission.call_tokens(call("s", max_output_tokens=0)) == 1_040


def view(
    rid: str, in_flight: int = 0, waiting: int = 0, capacity: int = CAPACITY, healthy: bool = True
) -> ReplicaView:
    return ReplicaView(rid, healthy, in_flight=in_flight, waiting=waiting, kv_capacity_tokens=capacity)


def test_spill_target_prefers_room_then_the_prompt_held_then_the_least_loaded() -> None:
    bound = view("b", in_flight=6)
    busy, idle = view("busy", in_flight=3), view("idle")
    roomy = {"busy", "idle"}
    replicas = [bound, busy, idle]

    def fits(r: ReplicaView) -> bool:
        return r.replica_id in roomy

    assert spill_target(bound, replicas, fits, 1_000) == "idle"  # room, least loaded
    assert spill_target(bound, replicas, fits, 1_000, cached=[1.0, 0.8, 0.0]) == "busy"  # holds the prompt
    assert spill_target(bound, replicas, fits, 1_000, cached=[1.0, 0.3, 0.0]) == "idle"  # too little held
    # room beats load; an engine queue or a prompt past a replica's KV rules it out of the room
    crowded = view("crowded", in_flight=9)
    assert spill_target(bound, [bound, crowded], lambda _: True, 1_000) == "crowded"
    queued = view("queued", waiting=2)
    assert spill_target(bound, [bound, queued], lambda _: True, 1_000) == "queued"  # (no room: by load)
    small = view("small", capacity=500)
    assert spill_target(bound, [bound, small], lambda _: True, 1_000) is None
    assert spill_target(bound, [bound, view("down", healthy=False)], lambda _: True, 1_000) is None


def test_spill_target_without_room_anywhere_balances_by_calls_in_flight() -> None:
    bound = view("b", in_flight=4)
    lighter, equal = view("lighter", in_flight=2), view("equal", in_flight=4)

    def none(_: ReplicaView) -> bool:
        return False

    assert spill_target(bound, [bound, lighter, equal], none, 1_000) == "lighter"
    assert spill_target(bound, [bound, equal], none, 1_000) is None  # a tie: it stays
    # one a call more loaded than the least, holding the prompt, takes it; two calls more does not
    near = view("near", in_flight=3)
    assert spill_target(bound, [bound, lighter, near], none, 1_000, cached=[0.0, 0.0, 0.9]) == "near"
    assert spill_target(bound, [bound, lighter, near], none, 1_000, cached=[0.9, 0.0, 0.0]) == "lighter"


def test_output_cap_reads_plain_positive_integers_only() -> None:
    assert output_cap(b"500") == 500
    assert output_cap(b"", msgspec.Raw(b"64"), b"9") == 64
    for raw in (b"0", b"-1", b"1.5", b'"500"', b"null", b"0123", b"1234567890", b"1e3", b" 5"):
        assert output_cap(raw) == 0, raw


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("affc"), st.integers(0, 3)), max_size=60))
def test_reservations_match_the_calls_in_flight_in_any_order_of_events(steps: list[tuple[str, int]]) -> None:
    """a: a call of one of 4 sessions arrives; f: the oldest call in flight finishes; c: it is cancelled;
    failing is `dispatch_failed` of the newest (tried elsewhere). Whatever the order, every replica's reserved
    KV is its bound workflows' plus its calls beside theirs, and none is left beside once all ended."""
    core = make_core(capacity=6_000)
    live: list[str] = []

    def take(decisions: list[Decision]) -> None:
        live.extend(d.request_id for d in decisions if isinstance(d, Dispatch))

    for op, n in steps:
        if op == "a":
            take(core.request_arrived(call(f"s{n}", prompt_tokens=500 * (n + 1))))
        elif op == "f" and live:
            finish(core, Dispatch(live.pop(0), ""))
        elif op == "c" and live:
            take(core.request_cancelled(live.pop(0)))
        elif live:
            take(core.dispatch_failed(live.pop(), replica_down=False))
        reserved_matches(core)
    while live:
        finish(core, Dispatch(live.pop(0), ""))
    reserved_matches(core)
    assert core.admission is not None and core.admission.beside == {}


def test_parallel_calls_over_a_shared_prefix_count_only_what_their_replica_does_not_hold() -> None:
    """vLLM keeps one copy of a prefix that calls share: 8 short calls over a 10k-token prefix held on their
    replica take little KV of their own there, and stay (counted whole, half of them spilled: a review)."""
    core = make_core(capacity=20_000)
    assert core.admission is not None
    prefix = tuple(range(1, 41))  # 40 chunks of 256 tokens (the discrete-event cluster's units)

    def shared(n: int) -> RequestInfo:
        req = call("fan", prompt_tokens=40 * 256 + n, max_output_tokens=100)
        return msgspec.structs.replace(req, prefix_hashes=prefix)

    first = only_dispatch(core.request_arrived(shared(0)))
    fan = [only_dispatch(core.request_arrived(shared(n))) for n in range(1, 8)]
    assert {d.replica_id for d in fan} == {first.replica_id} and core.spills == 0
    held = core.admission.beside[first.replica_id]
    assert 7 * 100 <= held <= 7 * (100 + 8)  # answers and the tails past the last chunk, not the prefix
    # a prompt the replica does not hold is counted whole, and past its room it spills
    other = msgspec.structs.replace(call("fan", prompt_tokens=12_000), prefix_hashes=tuple(range(100, 147)))
    assert only_dispatch(core.request_arrived(other)).replica_id != first.replica_id
