"""Admission by KV working set: a workflow starts on a replica only while its predicted KV footprint fits.

Contract:
- A workflow (one session) is *waiting* (its first call held here, released in a fair order across
  tenants), *live* (admitted: bound to one replica, where it reserves its predicted footprint) or *quiet*
  (admitted, but silent past its predicted return: its reservation lapsed, its binding stays).
- A replica has room for a footprint F while reserved + F <= capacity x `overcommit`, or while nothing is
  reserved on it (a workflow larger than a replica still runs, alone), this last only while no replica (of
  those given: the core gives its model's) has room under the limit (a mixed fleet's small replica, empty,
  took workflows a larger one had room for).
  A replica whose KV capacity is smaller than the call's prompt has no room for it (the prompt is past its
  context); where none takes the prompt, the call goes at once (the core's `_past_every_replica`). A
  replica whose KV capacity is unknown (0: not scraped yet, or not a vLLM) always has room: admission falls
  back to affinity alone. (A bound workflow whose prompt outgrew its replica's KV moves: the core's
  `_outgrown`.)
- Calls of admitted workflows are never held here: a quiet workflow that comes back reserves again at once,
  whatever the room (new work must not hold back work in flight).
- Footprint: the context now plus the predicted growth over the next `horizon_calls` calls (no more than
  the predicted remaining calls), from the predictor's graph after each call; for a new workflow, its prompt
  plus its agent type's mean growth per call (learned here, the predictor's prior until then) times
  `horizon_calls`.
- A call that comes back without the engine's usage (refused, as a prompt past the model's context is, or
  failed, or cancelled) learns nothing and sizes nothing: once no call of its workflow is in flight, the
  workflow's reservation lapses (its binding stays; its next call reserves again at once). Held as a live
  workflow's, the footprint of a prompt no engine took kept new work waiting for the whole hold.
- After each call: a workflow the predictor expects to end (return probability below `end_below_p_return`)
  or to come back only after a person's think time (median predicted gap above `quiet_gap_s`) frees its
  reservation at once; otherwise the reservation holds until the `hold_quantile` of its predicted return
  gap (at most `max_hold_s`), then lapses.
- Holds that no call uses: per agent type, the holds that ran out with no call of the workflow coming back
  and those a call came back into are counted (halved past `HOLD_OUTCOMES_KEPT`, so they follow a change);
  once `MIN_HOLD_OUTCOMES` are known and fewer than `end_below_p_return` of them had a call come back, a
  workflow of that type lapses its reservation after each call instead of holding it, but one finish every
  `HOLD_PROBE_S` still holds, so the count goes on (a type's probes hold at most `max_hold_s` / HOLD_PROBE_S
  reservations at once, whatever the rate of its calls). One-shot sessions that name an id (a client sending
  a fresh `X-Session-ID` per call) otherwise held ~1,000 tokens each for `max_hold_s`, as the predictor
  learns that a session ended only once it has been silent a while: 2,400 of them sent within 5 s filled a
  1.6M-token replica and the next new workflow waited ~2 minutes. What this learns comes from holds that
  ran out, so a burst of a type not seen before would hold for its first `max_hold_s`: hence the next rule.
- Holds of workflows not seen to go on: a workflow reserves nothing between calls (its hold's timer still
  runs, so its outcome is counted as above) until one of its calls went on from the one before (longer;
  or continuing a stored response: a Responses API call with `previous_response_id` sends only what is
  new), unless its agent type's first gaps come back (one at least, and no fewer than
  `end_below_p_return` of those known, counted apart from later gaps). Calls repeating one prompt do not
  go on (inference joins one-shot calls sharing an opening into one session). The core asks no retention
  of its replica for such a workflow's calls either (`dispatched` says). One-shot calls (an id per call, calls
  naming no session, one prompt repeated) otherwise each held ~1,000 tokens of the prior's growth for
  `max_hold_s` (120 s: the prior's gap quantile) before anything was learned: on a 9,600-token replica the
  15th sequential call waited two minutes with nothing running; 16 clients sending one prompt to a
  64k-token replica stalled for two minutes after ~200 calls; and where one conversation, or agents, shared
  the one-shot calls' agent type, a rule by type alone let them hold again (an adversarial review, d01-d05
  in docs/results/reliability-s48/). An agent holds from its second call on (its first return reserves
  at once, whatever the room), and from its first where its type's sessions usually go on.
- Holds sized from the prior (the predictor has learned nothing of the gap after the workflow's state, nor
  of its type's: `hold_outlook`'s `cold`) last its gap quantile, `max_hold_s`, whatever the agent does;
  while new workflows wait (here or in other workers), the core lapses those on replicas with no call in
  flight (`yield_cold_holds`, counted in `yielded`). Holds sized from what a type showed are kept.
- Cost-aware hold (`hold_price`, off when None): after a call, while work waits for KV (new workflows
  here, or calls in its replica's engine: `waiting`, as last scraped), a workflow that will be back
  within `price_max_gap_s` (its median predicted gap) keeps its reservation only while the re-prefill that
  saves, p_return x recompute(context), is worth at least `hold_price` x (footprint / the replica's KV
  capacity) x that gap; otherwise the reservation lapses at once and `finished` answers True (the core
  lets the retention go too). The re-prefill's cost is learned from the calls' first tokens
  (`prefill_seen`); until it is, every workflow holds.
- Waiting is bounded in time by `max_wait_s` (None: no bound): `take_overdue` hands out, oldest first, the
  waiting calls that waited that long, for the core to admit where placement sends them, room or not
  (`admit_overdue`; out of the fair order, so their tenants are not charged for them).
- Bounded: at most `max_waiting` workflows' calls wait (`wait` refuses beyond; the core answers 429; with
  workers, a bound shared by them: proxy/scheduler/shared_bound.py);
  the lapse heap holds about one wake-up per admitted workflow, at most two (plus 64: compacted on the call
  path, so also when nothing calls `expire`); admitted workflows end with their session in the core;
  per-agent-type growth figures are kept for at most `max_agent_types` types (least recently seen dropped).
- Other workers (`saga serve --workers N`): what they reserve on a replica (`foreign_reserved`, synced every
  few ms) counts in its `reserved` like this worker's own, so N workers admit against one capacity; their
  waiting workflows (`foreign_waiting`) are work waiting for KV to the cost-aware hold like this worker's.
- Sans-IO: time is passed in; nothing here awaits.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

from mypy_extensions import mypyc_attr

from fairness import FairQueue
from predictor import Predictor
from predictor.sharded import ShardedDict
from proxy.scheduler.prefill_rate import PrefillRate
from proxy.scheduler.shared_bound import SharedCount, reached
from proxy.scheduler.specs import AdmissionSpec as AdmissionSpec  # re-exported: its home before
from proxy.scheduler.types import ReplicaId, ReplicaView, RequestInfo

_GROWTH_EWMA = 0.05  # weight of one new observation in an agent type's mean growth per call
_UNBOUND = ""  # the replica of a workflow whose replica left the set, until its next call lands
_LAPSES_SLACK = 64  # entries the lapse heap may hold beyond two per workflow before it is compacted


def takes_prompt(replica: ReplicaView, prompt_tokens: int) -> bool:
    """The replica's KV, where known, is not smaller than the prompt (a prompt past it is past its context:
    the replica would refuse the call)."""
    capacity = replica.kv_capacity_tokens
    return capacity <= 0 or prompt_tokens <= capacity


def _measured_room(replica: ReplicaView, footprint: int) -> bool:
    """Nothing waits in the replica's engine and its free KV (its last reported usage) holds `footprint`."""
    return not replica.waiting and (1.0 - replica.kv_usage) * replica.kv_capacity_tokens >= footprint


# Holds that ran out unused (above): the outcomes needed before a type stops holding, the count past which
# both counts halve, and how often a finish of such a type still holds (so its count goes on).
# A type's counts (`_hold_outcomes`): holds a call came back into, holds that ran out unused, when one last
# held as a probe; and the same two counts for the gaps after a workflow's first call alone.
_BACK, _UNUSED, _PROBED, _FIRST_BACK, _FIRST_UNUSED = range(5)
MIN_HOLD_OUTCOMES = 32
HOLD_OUTCOMES_KEPT = 256
HOLD_PROBE_S = 1.0


# Acyclic (mypyc): numbers and strings only, so the cyclic GC does not track it (one per admitted workflow).
@mypyc_attr(acyclic=True)
class _Workflow:
    __slots__ = (
        "agent_type",
        "cold",
        "context",
        "footprint",
        "in_flight",
        "prompt",
        "queued_at",
        "quiet_at",
        "replica_id",
        "reserved",
        "went_on",
    )

    def __init__(self, replica_id: ReplicaId, agent_type: str, context: int, footprint: int) -> None:
        self.replica_id = replica_id
        self.agent_type = agent_type
        self.context = context  # tokens: last prompt (+ its answer once finished)
        self.prompt = 0  # the size of its last call as dispatched (`_size`)
        self.footprint = footprint
        self.reserved = 0  # what this workflow holds in its replica's reservation now
        self.in_flight = 0
        self.quiet_at: float | None = None  # when the reservation lapses (between calls)
        self.queued_at: float | None = None  # its wake-up in the lapse heap (at or before quiet_at)
        self.cold = False  # its hold was sized from the predictor's prior (nothing learned of its gap yet)
        self.went_on = False  # a call of it went on from the one before (longer, or continuing a response)


class WorkflowAdmission:
    """Waiting workflows, live reservations per replica; see the module contract."""

    def __init__(
        self,
        spec: AdmissionSpec,
        predictor: Predictor,
        weight_of: Callable[[str], float] = lambda _: 1.0,
        views: dict[ReplicaId, ReplicaView] | None = None,
    ) -> None:
        spec.validate()
        self.spec = spec
        self.predictor = predictor
        self._levels = predictor.config.quantiles  # the levels of `hold_outlook`'s gaps (a frozen config)
        self.views = views if views is not None else {}  # the core's: their reserved_tokens mirror ours
        # split over shards (predictor/sharded.py): one dict of ~100,000 workflows rebuilds itself in one step
        self.workflows: ShardedDict[_Workflow] = ShardedDict(salt=5, start_up=True)
        self.reserved: dict[ReplicaId, int] = {}  # this worker's reservations plus the other workers'
        # The KV of calls running beside another call of their workflow (`take_beside`), per replica, until
        # they end (a workflow's reservation covers one call at a time). Weighed only where such a call may
        # spill (`fits`), not in admission's room: counted in `reserved`, it admitted fewer new workflows
        # beside subagents in their parent's session (task times 0.1-3.8% longer in the DES, four seeds of
        # `swe-subagents-merged`, without any spill).
        self.beside: dict[ReplicaId, int] = {}
        self.foreign: dict[ReplicaId, int] = {}  # the other workers' share of `reserved` (none: one process)
        self.foreign_waiting = 0  # new workflows waiting in the other workers' admission
        # `saga serve --workers N`: the workflows waiting in every worker (`max_waiting`: shared_bound.py)
        self.shared: SharedCount | None = None
        # New workflows' first calls, one per session; cost 1 per workflow: tenants get admissions by weight.
        self.waiting: FairQueue[RequestInfo] = FairQueue("afs", weight_of, age_bound_s=None)
        self._waiting_per_session: dict[str, int] = {}
        # model -> calls waiting that name it: with one model (the usual fleet) nothing waits behind another
        self.waiting_models: dict[str, int] = {}
        # (when it began waiting, request id) in arrival order, only with `max_wait_s`: entries of calls no
        # longer waiting are dropped when they reach the front (at most the calls of the last `max_wait_s`)
        self._arrivals: deque[tuple[float, str]] = deque()
        self.admitted_overdue = 0
        # Wake-ups (at, seq, session): a heap, a workflow's at or before its `quiet_at` (about one a workflow:
        # a finish that holds longer pushes none); at most 2 x workflows + slack entries (compacted)
        self._lapses: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._growth: OrderedDict[str, float] = OrderedDict()  # agent type -> mean context growth per call
        self._output: OrderedDict[str, float] = OrderedDict()  # agent type -> mean completion tokens a call
        # agent type -> [holds a call came back into, holds that ran out unused, when one last held]
        self._hold_outcomes: OrderedDict[str, list[float]] = OrderedDict()
        self.admitted = 0
        self.lapsed = 0
        self.prefill = PrefillRate(spec.attention_tokens)
        self.let_go = 0  # holds given up because they cost more than the re-prefill they save
        # sessions whose hold was sized from the prior and reserves (some stale: checked when read)
        self._cold_holds: list[str] = []
        self.yielded = 0  # such holds lapsed for new workflows waiting beside an idle replica

    # -- waiting ----------------------------------------------------------------------------------------

    def is_admitted(self, session_id: str) -> bool:
        return session_id in self.workflows

    def is_waiting(self, session_id: str) -> bool:
        """Whether a call of the session waits here."""
        return session_id in self._waiting_per_session

    def rank_of_new(self, req: RequestInfo, now: float) -> float:
        """A new workflow's first call's place among its tenant's waiting calls (lower first)."""
        rank = float(next(self._seq))  # first come, first admitted within a tenant (ties: by arrival)
        if self.spec.order == "least-work":
            # A deadline of arrival + expected service: shorter work overtakes, by at most its difference
            # (a long workflow is never starved); an agent type not learned yet goes by its arrival.
            rank = now + (self.predictor.expected_work_s(req.session_id) or 0.0)
        return rank

    def wait(self, req: RequestInfo, now: float, rank: float | None = None) -> bool:
        """Hold a new workflow's first call (at `rank`, default `rank_of_new`); False when `max_waiting`
        calls already wait."""
        if reached(len(self.waiting), self.shared, self.spec.max_waiting):
            return False
        if rank is None:
            rank = self.rank_of_new(req, now)
        self.waiting.push(req.request_id, req, tenant=req.tenant_id, cost=1.0, remaining=rank, now=now)
        if self.spec.max_wait_s is not None:
            self._arrivals.append((now, req.request_id))
        self._waiting_per_session[req.session_id] = self._waiting_per_session.get(req.session_id, 0) + 1
        self.waiting_models[req.model] = self.waiting_models.get(req.model, 0) + 1
        if self.shared is not None:
            self.shared.publish(len(self.waiting))
        return True

    def peek(self, now: float) -> RequestInfo | None:
        return self.waiting.peek(now)

    def cancel(self, request_id: str) -> RequestInfo | None:
        """Withdraw a waiting call (its client went away); None when it is not waiting here."""
        req = self.waiting.remove(request_id)
        if req is not None:
            self._unwait(req)
        return req

    def take_waiting_of(self, session_id: str) -> list[RequestInfo]:
        """The calls of `session_id` that wait here, taken out uncharged (its workflow was admitted: they go
        with it). One pass over the waiting calls, only while one of the session's waits."""
        if session_id not in self._waiting_per_session:
            return []
        taken = [req for req in self.waiting.items() if req.session_id == session_id]
        for req in taken:
            self.cancel(req.request_id)
        return taken

    def _unwait(self, req: RequestInfo) -> None:
        if self.shared is not None:
            self.shared.publish(len(self.waiting))
        left = self._waiting_per_session.pop(req.session_id) - 1
        if left:
            self._waiting_per_session[req.session_id] = left
        left = self.waiting_models.pop(req.model) - 1
        if left:
            self.waiting_models[req.model] = left

    def take_overdue(self, now: float) -> RequestInfo | None:
        """The longest-waiting call that has waited `max_wait_s` or more, taken out of the waiting calls
        (None when there is none, or no bound); the core admits it with `admit_overdue`."""
        limit = self.spec.max_wait_s
        if limit is None:
            return None
        arrivals, waiting = self._arrivals, self.waiting
        while arrivals and arrivals[0][0] + limit <= now:
            request_id = arrivals.popleft()[1]
            req = waiting.remove(request_id) if request_id in waiting else None
            if req is not None:
                self._unwait(req)
                return req
        return None

    def admit_overdue(self, req: RequestInfo, replica_id: ReplicaId) -> None:
        """Admit a call `take_overdue` handed out on `replica_id`, room or not: a new workflow is bound
        there and reserves its footprint, as `admit` binds."""
        self.admitted_overdue += 1
        if req.session_id not in self.workflows:
            self._bind(req, replica_id)

    def footprint_of_new(self, req: RequestInfo) -> int:
        growth = self._growth.get(req.agent_type, self.predictor.config.priors.growth_tokens)
        return int(req.prompt_tokens + growth * self.spec.horizon_calls)

    def has_room(self, replica: ReplicaView, footprint: int, prompt_tokens: int = 0) -> bool:
        """Room for `footprint` on `replica` (the contract's rule), and its KV takes `prompt_tokens`."""
        if not takes_prompt(replica, prompt_tokens):
            return False
        capacity = replica.kv_capacity_tokens
        if capacity <= 0:
            return True
        reserved = self.reserved.get(replica.replica_id, 0)
        return (
            reserved == 0
            or reserved + footprint <= capacity * self.spec.overcommit
            or (self.spec.measured_room and _measured_room(replica, footprint))
        )

    def call_tokens(self, req: RequestInfo) -> int:
        """The KV a call takes that runs beside another call of its workflow (what its workflow reserves
        covers one call at a time): its prompt and its answer, sized by the cap the call names (`max_tokens`),
        else by its agent type's mean completion (the prior's growth a call until one is known). Not the
        type's growth: calls of one session in parallel grow its context little, and 8 of them so sized went
        to one replica whose KV held 5; nor the type's mean alone, which a session's short calls before its
        long parallel ones kept low."""
        output = req.max_output_tokens or self._output.get(
            req.agent_type, self.predictor.config.priors.growth_tokens
        )
        return int(req.prompt_tokens + output)

    def fits(self, replica: ReplicaView, tokens: int, prompt_tokens: int) -> bool:
        """`tokens` more fit on `replica` beside what is reserved there and the calls running there beside
        their workflows (`beside`), under its KV capacity (not past it by `overcommit`, which bets that
        workflows between calls do not all peak at once: a call beside others runs now; nor by the rule
        for an empty replica), and its KV takes `prompt_tokens`; a replica whose KV is unknown takes
        anything."""
        if not takes_prompt(replica, prompt_tokens):
            return False
        capacity = replica.kv_capacity_tokens
        if capacity <= 0:
            return True
        limit = capacity * min(1.0, self.spec.overcommit)
        held = self.reserved.get(replica.replica_id, 0) + self.beside.get(replica.replica_id, 0)
        return held + tokens <= limit or (self.spec.measured_room and _measured_room(replica, tokens))

    def take_beside(self, replica_id: ReplicaId, tokens: int) -> None:
        """A call beside another of its workflow went to `replica_id`: its `tokens` count there, for `fits`,
        until `give_back_beside`."""
        self.beside[replica_id] = self.beside.get(replica_id, 0) + tokens

    def give_back_beside(self, replica_id: ReplicaId, tokens: int) -> None:
        """That call ended. Nothing to give back where its replica left the set meanwhile (`replica_gone`)."""
        held = self.beside.get(replica_id, 0)
        if held < tokens:
            return
        if held == tokens:
            del self.beside[replica_id]
        else:
            self.beside[replica_id] = held - tokens

    def healthy_with_room(
        self, replicas: Iterable[ReplicaView], footprint: int, prompt_tokens: int = 0
    ) -> list[ReplicaView]:
        """The healthy `replicas` that have room for `footprint` and take a prompt of `prompt_tokens`, in
        their order. A replica with nothing reserved that holds no more than `footprint` comes in only
        while no replica has room under the limit: a small replica of a mixed fleet, empty, is no place for
        a workflow a larger one has room for (the KV-headroom scorer ranked it first: a review's mixed
        fleet). A replica whose KV (known) is smaller than the prompt is left out: the prompt is past its
        context (at most its KV), so it would refuse the call."""
        reserved, limit, measured = self.reserved, self.spec.overcommit, self.spec.measured_room
        room: list[ReplicaView] = []
        alone: list[ReplicaView] = []  # those of `room` in it by the rule that an empty replica runs it alone
        under_limit = False
        for r in replicas:
            if not r.healthy or not takes_prompt(r, prompt_tokens):
                continue
            capacity = r.kv_capacity_tokens
            if (
                capacity <= 0
                or (held := reserved.get(r.replica_id, 0)) + footprint <= capacity * limit
                or (measured and _measured_room(r, footprint))
            ):
                room.append(r)
                under_limit = True
            elif held == 0:
                room.append(r)
                alone.append(r)
        if alone and under_limit:
            return [r for r in room if r not in alone]
        return room  # (none takes the prompt: `SchedulerCore._past_every_replica` routes it)

    def admit(self, req: RequestInfo, replica_id: ReplicaId, now: float) -> None:
        """Take `req` (the waiting head, or a later call of a session that was admitted meanwhile) out of the
        waiting calls; a new workflow is bound to `replica_id` and reserves its footprint there."""
        if self.waiting.peek(now) is req:
            self.waiting.pop(now)  # charges its tenant: admissions follow the tenants' weights
            self._unwait(req)
        else:
            self.cancel(req.request_id)
        if req.session_id not in self.workflows:
            self._bind(req, replica_id)

    def admit_at_once(self, req: RequestInfo, replica_id: ReplicaId) -> None:
        """Admit a new workflow's first call that found nothing waiting and room on `replica_id` without
        queueing it: its tenant is charged as the queue's push and pop would have (admissions keep following
        the tenants' weights), and it is bound there as `admit` binds."""
        self.waiting.serve_now(req.tenant_id, 1.0)
        self._bind(req, replica_id)

    def admit_joined(self, req: RequestInfo, replica_id: ReplicaId) -> None:
        """Admit, without the queue, a workflow that joins work already placed: a subagent of an admitted
        workflow, a call pinned to the replica holding its state. Bound as `admit` binds; its tenant is not
        charged in the queue (which may hold others: `serve_now` is for an empty one)."""
        self._bind(req, replica_id)

    def _bind(self, req: RequestInfo, replica_id: ReplicaId) -> None:
        wf = _Workflow(replica_id, req.agent_type, req.prompt_tokens, self.footprint_of_new(req))
        self.workflows[req.session_id] = wf
        self._reserve(wf, wf.footprint)
        self.admitted += 1

    # -- admitted workflows -----------------------------------------------------------------------------

    def dispatched(self, req: RequestInfo, replica_id: ReplicaId, spilled: bool = False) -> bool:
        """A call of an admitted workflow went to `replica_id`: it is live there (re-bound if it moved; not
        when `spilled` there beside another of its calls: it stays bound, and False is returned).
        Returns `may_hold`: whether the call is worth a retention on its replica (the core asks none for a
        workflow that would not hold: for every call of a type whose one-shot sessions never come back, a
        retention kept half a replica's KV for them, 0.55x round-robin's calls in an adversarial review)."""
        wf = self.workflows.get(req.session_id)
        if wf is None:  # admitted before this core learned of admission (e.g. a policy change): admit now
            wf = self.workflows[req.session_id] = _Workflow(
                replica_id, req.agent_type, req.prompt_tokens, self.footprint_of_new(req)
            )
        # Back while its reservation was held for it, going on from its last call (a longer one, or one naming
        # the response it continues: a Responses API call with `previous_response_id` sends only what is new):
        # a call repeating it (inference joins one-shot calls sharing an opening into one session) proves
        # nothing.
        size = _size(req)
        goes_on = wf.prompt > 0 and (size > wf.prompt or bool(req.pinned_replica))
        if wf.quiet_at is not None and goes_on:
            self._count_hold(wf.agent_type, came_back=True, first=not wf.went_on)
        if goes_on:
            wf.went_on = True
        wf.prompt = size
        if not spilled:  # (a spilled call leaves its workflow's binding and context as they were)
            if wf.replica_id != replica_id:
                self._reserve(wf, 0)
                wf.replica_id = replica_id
            if req.prompt_tokens > wf.context:
                wf.context = req.prompt_tokens
        wf.in_flight += 1
        wf.quiet_at = None
        self._reserve(wf, wf.footprint)
        return not spilled and self.may_hold(wf)

    def finished(
        self, session_id: str, prompt_tokens: int, completion_tokens: int, now: float, served: bool = True
    ) -> bool:
        """A call of the workflow ended: learn its growth, re-size its footprint, decide how long it holds.
        `served`: it came back with the engine's usage (False: refused, failed or cancelled). True when the
        hold would cost more than the re-prefill it saves (`hold_price`): the reservation lapsed at once,
        and the retention should go too."""
        wf = self.workflows.get(session_id)
        if wf is None:
            return False
        in_flight = wf.in_flight = max(0, wf.in_flight - 1)
        if not served:
            # No engine took this call: it grew nothing, and its prompt (one past the model's context, or
            # a replica that came back with less KV) is no footprint to hold. Sized by it, the hold kept a
            # refused call's prompt reserved (three times the replica) for `max_hold_s`, and new work waited.
            if not in_flight:
                self._lapse(wf)
            return False
        self._learn(self._output, wf.agent_type, completion_tokens)
        if prompt_tokens > 0:  # unknown (0): keep what we knew
            context = prompt_tokens + completion_tokens
            before = wf.context
            if context > before:
                self._learn(self._growth, wf.agent_type, context - before)
            wf.context = context  # may shrink: an agent that compacts its history
        if in_flight:
            return False
        proven = self.may_hold(wf)  # (else its hold is a timer alone: no probe of `_rarely_back` spent on it)
        if proven and self._rarely_back(wf.agent_type, now):
            self._lapse(wf)
            return False
        outlook = self.predictor.hold_outlook(session_id, now)  # `predict`'s fields this reads, alone
        spec = self.spec
        if outlook is None:  # unknown to the predictor: hold for the longest allowed
            wf.footprint = max(wf.footprint, wf.context)
            if not proven:
                self._reserve(wf, 0)
            self._hold_until(session_id, wf, now + spec.max_hold_s)
            self._held_cold(session_id, wf)
            return False
        p_return, return_gap_s, next_prompt_tokens, remaining_calls, cold = outlook
        if p_return < spec.end_below_p_return:
            self._lapse(wf)
            return False
        levels = self._levels
        median_gap = _quantile(levels, return_gap_s, 0.5)
        if median_gap > spec.quiet_gap_s:
            self._lapse(wf)  # it comes back after minutes if at all: a tool call does not take that long
            return False
        growth = max(0.0, next_prompt_tokens - prompt_tokens)
        calls = min(max(remaining_calls, 1.0), max(spec.horizon_calls, 1.0))
        footprint = wf.footprint = int(wf.context + growth * calls)
        price = spec.hold_price
        if (
            price is not None
            and median_gap <= spec.price_max_gap_s
            and self._hold_costs_more(wf, footprint, p_return, median_gap, price)
        ):
            self._lapse(wf)
            self.let_go += 1
            return True
        self._reserve(wf, footprint if proven else 0)  # (unproven: the timer alone, to count the outcome)
        gap = _quantile(levels, return_gap_s, spec.hold_quantile)
        self._hold_until(session_id, wf, now + min(gap, spec.max_hold_s))
        if cold:
            self._held_cold(session_id, wf)
        else:
            wf.cold = False
        return False

    def _held_cold(self, session_id: str, wf: _Workflow) -> None:
        """The hold just set was sized from the prior: listed for `yield_cold_holds` when it reserves."""
        wf.cold = True
        if wf.reserved:
            cold = self._cold_holds
            cold.append(session_id)
            if len(cold) > 2 * len(self.workflows) + _LAPSES_SLACK:
                self._cold_holds = [sid for sid in dict.fromkeys(cold) if self._is_cold_hold(sid)]

    def _is_cold_hold(self, session_id: str) -> bool:
        wf = self.workflows.get(session_id)
        return wf is not None and wf.cold and wf.quiet_at is not None and not wf.in_flight and wf.reserved > 0

    def yield_cold_holds(self, replica_ids: set[ReplicaId]) -> bool:
        """Lapse the holds on `replica_ids` sized from the predictor's prior (the core: while new workflows
        wait, on replicas where no call runs); True when any did. One pass over the listed holds. Such a hold
        lasts the prior's gap quantile (120 s, `max_hold_s`) whatever the agent does: ten 3-call agents with
        1 s tool gaps on a 3,200-token replica left it idle for 120 s after the first three ended, eight
        waiting (an operator's review, 2026-12-07). A hold sized from what the type showed is kept: it
        predicts a return (the DES: idle-replica admission that ignored such holds made the declared cells
        3-8% slower)."""
        kept: list[str] = []
        freed = False
        workflows = self.workflows
        for session_id in self._cold_holds:
            if not self._is_cold_hold(session_id):
                continue  # it came back, lapsed or ended since (or is listed twice)
            wf = workflows[session_id]
            if wf.replica_id in replica_ids:
                # counted as a hold that ran out unused (it was not back while new work waited beside an idle
                # replica): else what the type's holds are worth is never learned, one-shot sessions of a type
                # whose first gaps once came back held again after each call, and their calls waited for a
                # tick each (an adversarial review: ~90 calls in 10 s where round-robin answered 17,261)
                self._count_hold(wf.agent_type, came_back=False, first=not wf.went_on)
                self._lapse(wf)
                self.yielded += 1
                freed = True
            else:
                kept.append(session_id)
        self._cold_holds = kept
        return freed

    def has_cold_holds(self) -> bool:
        """Holds sized from the prior may be listed (`yield_cold_holds` has something to look at)."""
        return bool(self._cold_holds)

    def _hold_costs_more(
        self, wf: _Workflow, footprint: int, p_return: float, gap_s: float, price: float
    ) -> bool:
        """`hold_price`'s test: the re-prefill the hold saves is worth less than its share of the replica's
        KV kept idle over the gap (replica-seconds); False while the capacity or the prefill cost is
        unknown."""
        view = self.views.get(wf.replica_id)
        if view is None or view.kv_capacity_tokens <= 0:
            return False
        # the hold delays only work that waits for KV, here or in its replica's engine: else it is free
        if not len(self.waiting) and not view.waiting and not self.foreign_waiting:
            return False
        recompute_s = self.prefill.recompute_s(wf.context)
        if recompute_s is None:
            return False
        return p_return * recompute_s < price * footprint / view.kv_capacity_tokens * gap_s

    def prefill_seen(self, ttft_s: float, prompt_tokens: int, cached_tokens: int) -> None:
        """A call's time from arrival to its first token: what a re-prefill costs (only with `hold_price`)."""
        if self.spec.hold_price is not None:
            self.prefill.observe(ttft_s, prompt_tokens, cached_tokens)

    def call_dropped(self, session_id: str) -> None:
        """A call of an admitted workflow ended before any engine took it (withdrawn while held in the release
        queue, or refused after its replica failed): with none of its calls in flight and no hold running, the
        workflow's reservation lapses, as after a call no engine took (it stays bound). Held on, a new
        workflow's reservation had nothing to lapse it but the session's idle TTL (an hour)."""
        wf = self.workflows.get(session_id)
        if wf is not None and not wf.in_flight and wf.quiet_at is None:
            self._lapse(wf)

    def withdrawn(self, session_id: str) -> None:
        """A dispatched call never reached its replica (it will be dispatched again)."""
        wf = self.workflows.get(session_id)
        if wf is not None:
            wf.in_flight = max(0, wf.in_flight - 1)

    def expire(self, now: float, limit: int = 0) -> bool:
        """Lapse the reservations whose hold ran out by `now`; True when any did (there may be room now).
        `limit` (0: none): take at most that many wake-ups off the heap; those left are still `due(now)`."""
        freed = False
        workflows = self.workflows
        taken = 0
        while self._lapses and self._lapses[0][0] <= now:  # (re-read: a re-arm may compact the heap anew)
            if limit and taken == limit:
                break
            taken += 1
            at, _, session_id = heapq.heappop(self._lapses)
            wf = workflows.get(session_id)
            if wf is None or wf.queued_at != at:
                continue  # its workflow ended, or it has an earlier wake-up
            wf.queued_at = None
            quiet_at = wf.quiet_at
            if quiet_at is None:  # a call came since: nothing held
                continue
            if quiet_at > now:  # held longer since this wake-up was set: wake up then
                self._wake_at(session_id, wf, quiet_at)
            elif wf.in_flight == 0:
                # held, or timed alone (a type not seen back); not one whose replica left (`replica_gone`)
                if wf.reserved or wf.replica_id != _UNBOUND:
                    self._count_hold(wf.agent_type, came_back=False, first=not wf.went_on)
                self._lapse(wf)
                freed = True
        return freed

    def due(self, now: float) -> bool:
        """A wake-up is due by `now` (`expire(now)` has holds to look at)."""
        lapses = self._lapses
        return bool(lapses) and lapses[0][0] <= now

    def end(self, session_id: str) -> None:
        """The workflow is over (ended or forgotten): free its reservation. Its waiting calls, if any, stay
        (each accepted call gets an answer); they are admitted again as a new workflow."""
        wf = self.workflows.pop(session_id)
        if wf is not None:
            self._reserve(wf, 0)

    def replica_gone(self, replica_id: ReplicaId) -> None:
        """A replica left the set: its workflows reserve nothing until their next call lands somewhere (they
        are unbound: a call of theirs still in flight there that ends reserves nothing, so the replica, if
        added again, does not start with reservations of workflows no longer on it)."""
        for wf in self.workflows.values():
            if wf.replica_id == replica_id:
                self._reserve(wf, 0)
                wf.replica_id = _UNBOUND
        self.reserved.pop(replica_id, None)
        self.foreign.pop(replica_id, None)
        self.beside.pop(replica_id, None)

    def foreign_reserved(self, replica_id: ReplicaId, tokens: int) -> bool:
        """The other workers now reserve `tokens` on the replica in all; True when that is less than before
        (there may be room now)."""
        before = self.foreign.get(replica_id, 0)
        if tokens == before:
            return False
        if tokens:
            self.foreign[replica_id] = tokens
        else:
            del self.foreign[replica_id]
        total = self.reserved[replica_id] = self.reserved.get(replica_id, 0) + tokens - before
        view = self.views.get(replica_id)
        if view is not None:
            view.reserved_tokens = total
            view.foreign_reserved_tokens = tokens
        return tokens < before

    def own_reserved(self, replica_id: ReplicaId) -> int:
        """What this worker's workflows reserve on the replica (the figure it publishes to the others)."""
        return self.reserved.get(replica_id, 0) - self.foreign.get(replica_id, 0)

    def snapshot(self) -> dict[str, object]:
        foreign = self.foreign
        return {
            "waiting": len(self.waiting),
            "live": sum(1 for wf in self.workflows.values() if wf.reserved),
            "admitted": self.admitted,
            "lapsed": self.lapsed,
            "let_go": self.let_go,
            "yielded": self.yielded,
            "admitted_overdue": self.admitted_overdue,
            # this worker's own (the other workers' are theirs to report)
            "reserved_tokens": {r: t - foreign.get(r, 0) for r, t in self.reserved.items()},
            **({"foreign_reserved_tokens": dict(foreign)} if foreign else {}),
        }

    # -- internals --------------------------------------------------------------------------------------

    def _reserve(self, wf: _Workflow, tokens: int) -> None:
        delta = tokens - wf.reserved
        if delta:
            replica_id = wf.replica_id
            if replica_id == _UNBOUND:  # (its reservation went with its replica: `replica_gone`)
                return
            total = self.reserved[replica_id] = self.reserved.get(replica_id, 0) + delta
            wf.reserved = tokens
            view = self.views.get(replica_id)
            if view is not None:
                view.reserved_tokens = total

    def _lapse(self, wf: _Workflow) -> None:
        if wf.reserved:
            self.lapsed += 1
        wf.quiet_at = None
        self._reserve(wf, 0)

    def _hold_until(self, session_id: str, wf: _Workflow, at: float) -> None:
        wf.quiet_at = at
        queued = wf.queued_at
        if queued is None or at < queued:
            self._wake_at(session_id, wf, at)
        # else its wake-up comes first, and `expire` then sets one at `quiet_at`: a call's finish pushes no
        # entry for a workflow already in the heap (the heap would grow by one per call without ticks)

    def _wake_at(self, session_id: str, wf: _Workflow, at: float) -> None:
        wf.queued_at = at  # a later wake-up it had is left in the heap, stale
        lapses = self._lapses
        heapq.heappush(lapses, (at, next(self._seq), session_id))
        if len(lapses) > 2 * len(self.workflows) + _LAPSES_SLACK:
            self._compact_lapses()

    def _compact_lapses(self) -> None:
        """Drop the heap's stale entries (wake-ups of ended workflows, or later than a workflow's own): a
        workflow's wake-up is the entry at its `queued_at`, so about one entry per workflow is left. Run when
        the heap is over twice the workflows (wake-ups moved earlier, or ended workflows, with nothing
        calling `expire`): amortised O(1) per push."""
        workflows = self.workflows
        live = []
        for entry in self._lapses:
            wf = workflows.get(entry[2])
            if wf is not None and wf.queued_at == entry[0]:
                live.append(entry)
        heapq.heapify(live)
        self._lapses = live

    def _count_hold(self, agent_type: str, came_back: bool, first: bool) -> None:
        """One hold's outcome; `first`: the gap after a workflow's first call (or calls repeating it), counted
        apart too (`may_hold`)."""
        counts = self._hold_outcomes.get(agent_type)
        if counts is None:
            counts = self._hold_outcomes[agent_type] = [0.0, 0.0, -math.inf, 0.0, 0.0]  # (the indices above)
            if len(self._hold_outcomes) > self.spec.max_agent_types:
                self._hold_outcomes.popitem(last=False)
        else:
            self._hold_outcomes.move_to_end(agent_type)
        pairs = ((_BACK, _UNUSED), (_FIRST_BACK, _FIRST_UNUSED)) if first else ((_BACK, _UNUSED),)
        for back, unused in pairs:
            counts[back if came_back else unused] += 1.0
            if counts[back] + counts[unused] > HOLD_OUTCOMES_KEPT:
                counts[back] /= 2
                counts[unused] /= 2

    def may_hold(self, wf: _Workflow) -> bool:
        """Whether the workflow reserves its KV between calls (the contract): once one of its calls went on
        from the one before; before that, only where its type's first gaps come back (one at least, and no
        fewer than `end_below_p_return` of those known)."""
        if wf.went_on:
            return True
        counts = self._hold_outcomes.get(wf.agent_type)
        if counts is None:
            return False
        back = counts[_FIRST_BACK]
        return back > 0 and back >= self.spec.end_below_p_return * (back + counts[_FIRST_UNUSED])

    def _rarely_back(self, agent_type: str, now: float) -> bool:
        """Too few of this type's holds had a call come back into them to hold after this call (the
        contract); False once every HOLD_PROBE_S, a finish that holds to keep counting."""
        counts = self._hold_outcomes.get(agent_type)
        if counts is None:
            return False
        back, unused = counts[_BACK], counts[_UNUSED]
        known = back + unused
        if known < MIN_HOLD_OUTCOMES or back >= self.spec.end_below_p_return * known:
            return False
        if now - counts[_PROBED] >= HOLD_PROBE_S:
            counts[_PROBED] = now
            return False
        return True

    def _learn(self, means: OrderedDict[str, float], agent_type: str, value: int) -> None:
        """A moving mean per agent type (`_growth`, `_output`), at most `max_agent_types` of them."""
        prior = means.get(agent_type)
        if prior is None:
            means[agent_type] = value
            if len(means) > self.spec.max_agent_types:
                means.popitem(last=False)
        else:
            means[agent_type] = prior + _GROWTH_EWMA * (value - prior)
            means.move_to_end(agent_type)


def _size(req: RequestInfo) -> int:
    """A call's size, to tell one that goes on from its session's last call (longer) from one repeating it:
    over HTTP its conversation's bytes (the token estimate's scale is learned as calls go, so one prompt
    repeated can look longer), in the discrete-event cluster (no body) its tokens."""
    return req.prompt_chars or req.prompt_tokens


def _quantile(levels: tuple[float, ...], values: tuple[float, ...], q: float) -> float:
    """The value at level `q`, interpolated between the predictor's quantiles (clamped at the ends)."""
    if not values:
        return 0.0
    if q <= levels[0]:
        return values[0]
    for i in range(1, len(levels)):  # indexes, not pairwise(zip(...)): called twice on each call's finish
        hi = levels[i]
        if q <= hi:
            lo, v_lo = levels[i - 1], values[i - 1]
            return v_lo + (values[i] - v_lo) * (q - lo) / (hi - lo)
    return values[-1]
