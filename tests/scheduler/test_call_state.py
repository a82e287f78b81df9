"""What calls leave behind in the scheduler (issue 12): per-session records the cyclic GC does not track, a
lapse heap bounded without `tick`, a new workflow admitted at once when nothing waits (charged as the queue
would), and the predictor's `hold_outlook` equal to `predict`'s fields."""

from __future__ import annotations

import gc
import random

import pytest

from fairness import FairQueue
from predictor import Predictor
from proxy.scheduler import RequestInfo, SchedulerCore, Usage, build_policy
from proxy.scheduler import core as core_module
from proxy.scheduler.admission import AdmissionSpec, WorkflowAdmission
from proxy.scheduler.types import ReplicaView
from tests.clocks import Clock

STOP = Usage(prompt_tokens=12, completion_tokens=3, finish_reason="stop")
# The records are acyclic native classes once mypyc compiles them; pure Python tracks every instance.
COMPILED = not core_module.__file__.endswith(".py")


def _one_shot_calls(core: SchedulerCore, clock: Clock, calls: int, first: int = 0, every: int = 2) -> None:
    """call_cost's pattern: an inferred session that keeps talking and, every `every` calls, a new one-call
    session (every other call in call_cost)."""
    for n in range(first, first + calls):
        clock.now += 0.01
        sid = f"conv-a-{n}" if n % every == 0 else "conv-a"
        # (the talking session's prompt grows: it goes on, so its calls come back into its holds)
        req = RequestInfo(f"q{n}", sid, clock.now, prompt_tokens=15 + n, session_inferred=True)
        core.request_arrived(req)
        core.first_token(req.request_id)
        core.request_finished(req.request_id, STOP)


@pytest.mark.skipif(not COMPILED, reason="the records are untracked once compiled (mypyc's acyclic classes)")
@pytest.mark.parametrize("policy", ["saga", "round-robin"])
def test_calls_leave_no_records_the_gc_tracks(policy: str) -> None:
    clock = Clock()
    core = SchedulerCore(["r0"], build_policy(policy, seed=0), clock)
    _one_shot_calls(core, clock, 2000)  # the graph and the caches warm up
    gc.collect()
    before = len(gc.get_objects())
    _one_shot_calls(core, clock, 4000, first=2000)
    gc.collect()
    assert len(core.sessions) == 3001  # 2,000 one-call sessions more: no tick forgot them
    records = [*core.sessions.values(), *core.predictor.sessions.values()]
    if core.admission is not None:
        records += core.admission.workflows.values()
    assert records and not any(gc.is_tracked(r) for r in records)
    # Before, each one-call session left 2-3 tracked records (core, predictor, admission): 4,000-6,000 here.
    # What grows now is bounded caches (the retention's answers keep up to 4,096 return models).
    assert len(gc.get_objects()) - before < 2000 / 4


def test_the_lapse_heap_stays_bounded_without_tick() -> None:
    clock = Clock()
    core = SchedulerCore(["r0"], build_policy("saga", seed=0), clock)
    _one_shot_calls(core, clock, 8000, every=8)
    assert core.admission is not None
    workflows = len(core.admission.workflows)
    assert workflows == 1001
    # a wake-up per workflow, and a few left stale by holds that moved earlier (was one per call: 8,000)
    assert len(core.admission._lapses) <= workflows + 16


def _admission() -> WorkflowAdmission:
    views = {r: ReplicaView(r, kv_capacity_tokens=50_000) for r in ("r0", "r1")}
    return WorkflowAdmission(AdmissionSpec(), Predictor(), views=views)


def test_compacting_the_lapse_heap_changes_no_lapse() -> None:
    """Two admissions see the same calls; one compacts its heap after every step: `expire` lapses the same."""
    rng = random.Random(5)
    plain, compacted = _admission(), _admission()
    now = 0.0
    for n in range(4000):
        now += rng.expovariate(20.0)
        sid = f"s{rng.randrange(40)}"
        op = rng.random()
        prompt, output, replica = rng.randrange(100, 6000), rng.randrange(1, 300), rng.choice(("r0", "r1"))
        for adm in (plain, compacted):
            if op < 0.45:
                adm.predictor.call_arrived(sid, "coder", now, prompt)
                req = RequestInfo(f"q{n}", sid, now, prompt_tokens=prompt, agent_type="coder")
                adm.dispatched(req, replica)
            elif op < 0.9:
                adm.predictor.call_finished(sid, now, prompt, output, "tool_calls", ("bash",))
                adm.finished(sid, prompt, output, now)
            elif op < 0.93:
                adm.end(sid)
            else:
                held = {sid: wf.quiet_at for sid, wf in adm.workflows.items()}
                adm.expire(now)
                for sid, at in held.items():  # exactly the holds due by now lapsed
                    wf = adm.workflows[sid]
                    assert (wf.quiet_at, wf.reserved) == (
                        (None, 0) if at is not None and at <= now else (at, wf.reserved)
                    )
            if adm is compacted:
                adm._compact_lapses()
        assert (plain.lapsed, plain.reserved) == (compacted.lapsed, compacted.reserved)
    assert plain.lapsed > 20  # holds did run out along the way
    assert len(compacted._lapses) <= len(compacted.workflows) < len(plain._lapses)
    for adm in (plain, compacted):
        adm.expire(now + 1e6)
    assert (plain.lapsed, plain.reserved) == (compacted.lapsed, compacted.reserved)


def _accounts(queue: FairQueue[str]) -> tuple[object, ...]:
    return (dict(queue.counters), queue.system_time, dict(queue.served), dict(queue.max_cost))


@pytest.mark.parametrize("order", ["afs", "vtc", "fifo"])
def test_serve_now_charges_as_push_then_pop(order: str) -> None:
    weights = {"a": 1.0, "b": 3.0, "c": 0.5}
    queued = FairQueue[str](order, weights.__getitem__)  # type: ignore[arg-type]
    direct = FairQueue[str](order, weights.__getitem__)  # type: ignore[arg-type]
    rng = random.Random(7)
    for i in range(500):
        tenant, cost = rng.choice("abc"), rng.choice((0.0, 1.0, 2.5, -1.0))
        if rng.random() < 0.3:  # sometimes a backlog builds in both, and drains the same way
            other = rng.choice("abc")
            for q in (queued, direct):
                q.push(f"k{i}", "x", tenant=tenant, cost=cost, remaining=1.0, now=0.0)
                q.push(f"j{i}", "x", tenant=other, cost=1.0, remaining=1.0, now=0.0)
            while len(queued):
                queued.pop(0.0)
                direct.pop(0.0)
            continue
        queued.push(f"k{i}", "x", tenant=tenant, cost=cost, remaining=1.0, now=0.0)
        assert queued.pop(0.0) == "x"
        direct.serve_now(tenant, cost)
        assert _accounts(direct) == _accounts(queued)
    direct.push("held", "x", tenant="a", cost=1.0, remaining=1.0, now=0.0)
    with pytest.raises(ValueError):
        direct.serve_now("a", 1.0)


def test_a_new_workflow_with_nothing_waiting_is_admitted_at_once_and_charged() -> None:
    clock = Clock()
    core = SchedulerCore(["r0"], build_policy("saga", seed=0), clock)
    assert core.admission is not None
    req = RequestInfo("q1", "w1", 0.0, prompt_tokens=100, tenant_id="t")
    (decision,) = core.request_arrived(req)
    assert decision.replica_id == "r0"  # type: ignore[union-attr]
    assert core.admission.is_admitted("w1") and not core.admission.is_waiting("w1")
    assert len(core.admission.waiting) == 0
    assert core.admission.waiting.served == {"t": 1.0} and core.admission.waiting.counters == {"t": 1.0}


def test_hold_outlook_is_predicts_fields() -> None:
    rng = random.Random(11)
    predictor = Predictor()
    now = 0.0
    checked = 0
    for i in range(3000):
        sid = f"s{rng.randrange(30)}"
        now += rng.expovariate(5.0)
        predictor.call_arrived(sid, rng.choice(("coder", "web")), now, rng.randrange(100, 20_000))
        now += rng.expovariate(2.0)
        tools = (rng.choice(("bash", "edit")),) if rng.random() < 0.6 else ()
        predictor.call_finished(sid, now, rng.randrange(100, 20_000), rng.randrange(1, 500), "stop", tools)
        if i % 200 == 199:
            predictor.session_ended(sid)
        at = now + rng.choice((0.0, 0.0, rng.expovariate(0.5)))
        prediction = predictor.predict(sid, at)
        outlook = predictor.hold_outlook(sid, at)
        if prediction is None:
            assert outlook is None
            continue
        checked += 1
        assert outlook == (
            prediction.p_return,
            prediction.return_gap_s,
            prediction.next_prompt_tokens,
            prediction.remaining_calls,
            prediction.cold,
        )
    assert checked > 2000
    assert predictor.hold_outlook("unknown", now) is None


def test_the_state_bench_counts_what_calls_leave() -> None:
    import asyncio

    from loadtests.bench.core_bench_state import measure

    got = asyncio.run(measure("saga", 2000))
    assert got["calls"] == 2000 and got["sessions"] == got["workflows"] == 1101  # 100 warm-up + 1000 one-call
    assert got["lapse_heap"] <= got["workflows"] + 16
    if COMPILED:
        # 1.5 per call when the records were tracked; the count moves by a few hundred objects from run to
        # run (the loop's timers, the collector's timing), hence a margin and 2,000 calls to spread it over
        assert got["tracked_objects_left_per_call"] < 0.5


def test_a_wake_up_re_armed_by_expire_lapses_the_hold_in_time_even_when_it_compacts_the_heap() -> None:
    adm = _admission()
    for i in range(200):  # unknown to the predictor: each holds until now + max_hold_s (120 s)
        adm.dispatched(RequestInfo(f"q{i}", f"s{i}", 0.0, prompt_tokens=100), "r0")
        adm.finished(f"s{i}", 100, 10, 0.0)
    assert len(adm._lapses) == 200
    for i in range(1, 200):
        adm.end(f"s{i}")  # their wake-ups stay in the heap, stale
    adm.dispatched(RequestInfo("q-again", "s0", 10.0, prompt_tokens=110), "r0")  # (it goes on)
    adm.finished("s0", 100, 10, 10.0)  # holds until 130: its wake-up at 120 stays, nothing pushed
    assert len(adm._lapses) == 200 and adm.workflows["s0"].quiet_at == 130.0
    assert not adm.expire(125.0)  # the wake-up at 120 re-arms at 130 and compacts the heap
    assert adm._lapses == [(130.0, adm._lapses[0][1], "s0")] and adm.workflows["s0"].reserved > 0
    assert adm.expire(130.0) and adm.workflows["s0"].reserved == 0 and adm._lapses == []


def test_a_tick_in_bounded_steps_ends_and_forgets_what_one_tick_does() -> None:
    """The predictor's ends go in the same steps (a flood going quiet ended thousands of sessions a tick at
    once): with sessions both past the predictor's horizon and the core's idle TTL, one tick ends each
    (learning its end) and then forgets it; in steps the core forgets some before their step comes, and
    those end first. Same sessions left, same ends learned."""
    runs = []
    for _ in range(2):
        clock = Clock()
        core = SchedulerCore(["r0"], build_policy("saga", seed=0), clock)
        _one_shot_calls(core, clock, 3000)
        clock.now += 100_000.0  # past every horizon and every idle TTL
        runs.append((core, clock))
    (whole, _), (stepped, _) = runs
    whole.tick()
    stepped.tick(lapse_limit=50)
    assert stepped.ticking()  # the rest of the tick: its steps
    while stepped.ticking():
        stepped.tick_more(50)
    assert set(whole.sessions) == set(stepped.sessions) == set()
    assert set(whole.predictor.sessions) == set(stepped.predictor.sessions) == set()
    ends = [
        {key: node.ends for key, node in core.predictor.graphs[agent].nodes.items()}
        for core in (whole, stepped)
        for agent in core.predictor.graphs
    ]
    assert ends[0] == ends[1] and sum(ends[0].values()) >= 1000


def test_a_tick_in_bounded_steps_lapses_the_holds_one_tick_lapses() -> None:
    """The proxy's housekeeping ticks in steps (`tick(lapse_limit)`, then `tick_more` while `ticking()`: one
    tick of ~20,000 lapses held its event loop 8-12 ms). The steps lapse exactly what one tick lapses, the
    holds due by the tick's time, however far the clock moves between them."""
    runs = []
    for _ in range(2):
        clock = Clock()
        core = SchedulerCore(["r0"], build_policy("saga", seed=0), clock)
        _one_shot_calls(core, clock, 4000)
        runs.append((core, clock))
    (whole, _), (stepped, stepped_clock) = runs
    assert whole.admission is not None and stepped.admission is not None
    whole.tick()
    assert not whole.ticking()
    stepped.tick(lapse_limit=100)
    assert stepped.ticking() and 0 < stepped.admission.lapsed <= 100
    steps = 1
    while stepped.ticking():
        stepped_clock.now += 1000.0  # every hold is due by now: only those due by the tick's time may lapse
        stepped.tick_more(100)
        steps += 1
    assert steps >= 10
    assert (stepped.admission.lapsed, stepped.admission.reserved) == (
        whole.admission.lapsed,
        whole.admission.reserved,
    )
    held = {sid: wf.quiet_at for sid, wf in whole.admission.workflows.items() if wf.quiet_at is not None}
    assert held == {
        sid: wf.quiet_at for sid, wf in stepped.admission.workflows.items() if wf.quiet_at is not None
    }
    assert whole.admission.lapsed > 1000 and held  # most holds were due at the tick's time, not all
