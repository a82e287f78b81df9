"""The sans-IO scheduler core: events in, decisions out.

The core never awaits and never touches a socket. The I/O shell (the aiohttp proxy, or the discrete-event
cluster) reports what happened — a call arrived, its first token came back, it finished, a replica's health
or load changed, time passed — and carries out the decisions each call returns. Time comes only from the
injected clock, so the same core runs on the wall clock in production and on a virtual clock in simulation.

Every event method returns a list of decisions, and a decision may answer a call that arrived earlier: with
a release queue (proxy/scheduler/release.py, off unless configured) a call is held in the proxy and its
`Dispatch` comes from a later `request_finished`, `replica_stats` or `tick`; the shell carries out every
decision, whichever event returned it. A held call whose client goes away is withdrawn with
`request_cancelled`.

With admission by KV working set (the policy's `admission`, proxy/scheduler/admission.py) a new workflow's
first call waits in the proxy until a replica has room for its predicted footprint; it then binds there, and
its later calls go on without waiting for admission again. A waiting call is answered later in the same way.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any

import msgspec
from mypy_extensions import mypyc_attr

from fairness import TenantLedger, TenantsConfig
from predictor import Predictor
from predictor.sharded import ShardedLru
from proxy.scheduler.admission import WorkflowAdmission, takes_prompt
from proxy.scheduler.framework import RoutingPolicy
from proxy.scheduler.plugins.prefix_cache import PrefixCacheScorer
from proxy.scheduler.release import HeldCall, ReleaseQueue
from proxy.scheduler.replica_speed import ReplicaSpeeds
from proxy.scheduler.shared_bound import SharedCount
from proxy.scheduler.stealing import recompute_s, speed_target, spill_target, steal_target
from proxy.scheduler.types import (
    Decision,
    Dispatch,
    Reject,
    ReplicaId,
    ReplicaStats,
    ReplicaView,
    RequestInfo,
    Usage,
)

_MAX_TENANTS_SEEN = 4096
_NO_REPLICA_FOR_MODEL = "no healthy replica serves the model this call names"
_EVICTIONS_PER_NEW_SESSION = 8  # past `max_sessions`: idle sessions a new one evicts at most
_EVICTION_SCAN = 256  # ... looking this far into the idle ones for a tenant over its share of the table
_EVICTIONS_PER_TICK = 1024  # and each housekeeping tick
_PROMPT_SCALE_WEIGHT = 0.05  # of one call's engine / estimate ratio in `prompt_scale` (geometric)
_NO_TURNS: dict[int, int] = {}  # (shared, never written: a release seen by no other worker's lane)
_TURN_S = 0.25  # how long room freed here is left to another worker's turn at most
_SLO_PRIORITY_LEAD = 1 << 40  # workflow-age priorities of interactive tenants are this much lower (first)


# Plain classes, not msgspec Structs: mypyc compiles them to native classes (setup.py; a Struct stays a
# Python class there, and its fields cost a lookup each from compiled code).
class _InFlight:
    __slots__ = (
        "beside",
        "dispatched_at",
        "first_token_at",
        "load",
        "replica_id",
        "req",
        "retained",
        "session",
        "tried",
    )

    def __init__(
        self,
        req: RequestInfo,
        replica_id: ReplicaId,
        tried: set[ReplicaId],
        first_token_at: float | None = None,
        retained: bool = False,  # its dispatch asked the replica to keep its KV after it ends
    ) -> None:
        self.req = req
        self.replica_id = replica_id
        self.tried = tried
        self.first_token_at = first_token_at
        self.retained = retained
        # the session it was dispatched in: one ended (and its id sent again) while it ran is not this
        # call's, and its finish must not count against the new one
        self.session: _Session | None = None
        # when it was dispatched and the calls then in flight on its replica, itself included: read only
        # where replicas' speed is measured (`SchedulerCore.speeds`)
        self.dispatched_at = 0.0
        self.load = 0
        # the KV it takes beside another call of its workflow, counted on its replica while it runs, where
        # such calls weigh room (`WorkflowAdmission.take_beside`); 0: a call its workflow's reservation covers
        self.beside = 0


# Acyclic (mypyc): every field is a number or a string, so an instance can be in no reference cycle and the
# cyclic GC does not track it. One lives per session the core knows (with calls that carry no session id, one
# more every two calls, kept `single_call_session_ttl_s`); tracked, a full collection would walk every one.
@mypyc_attr(acyclic=True)
class _Session:
    __slots__ = ("calls", "in_flight", "last_seen", "retained_on", "seq", "spawned", "started", "tenant_id")

    def __init__(
        self,
        last_seen: float,
        in_flight: int = 0,
        calls: int = 0,
        started: float = 0.0,
        tenant_id: str = "default",
        seq: int = 0,  # order of arrival among workflows (older = lower)
    ) -> None:
        self.last_seen = last_seen
        self.in_flight = in_flight
        self.calls = calls
        self.started = started
        self.tenant_id = tenant_id
        self.seq = seq
        self.spawned = False  # a subagent's: its first call continues its parent's workflow
        # the replica its last call asked to keep its KV after it ended (a retention standing, or run out)
        self.retained_on: ReplicaId | None = None


@mypyc_attr(allow_interpreted_subclasses=True)  # the tests subclass it
class SchedulerCore:
    """Routes calls with a `RoutingPolicy` and keeps the replica and session datastore.

    Contract: each call that arrives gets exactly one final outcome — a `Dispatch` (possibly after failed
    attempts re-dispatched elsewhere by `dispatch_failed`) or a `Reject`; `request_finished` must then be
    reported exactly once for every dispatched call; retentions the policy releases early are queued for
    the shell (`take_releases`), which drains them after each `request_finished`. Sessions idle longer than
    `session_idle_ttl_s` with no call in flight are forgotten on `tick`, so memory stays bounded by the live
    sessions; beyond `max_sessions`, a new session first evicts the least recently seen idle one (up to 8
    while the table is over the bound, and each `tick` up to 1,024: sessions busy when a burst filled it
    go once idle), a one-call inferred session before any other (a flood of distinct session ids cannot
    grow the table without bound between two ticks or within the idle TTL, and one-shot calls push out
    their own kind first). The clock must not go back: the table is kept in last-seen order, and `tick`
    reads only its expired head.
    """

    def __init__(
        self,
        replicas: Iterable[ReplicaId],
        policy: RoutingPolicy,
        clock: Callable[[], float],
        *,
        session_idle_ttl_s: float = 3600.0,
        single_call_session_ttl_s: float = 120.0,
        release: ReleaseQueue | None = None,
        tenants: TenantsConfig | None = None,
        predictor: Predictor | None = None,
        max_sessions: int | None = None,
    ) -> None:
        self.policy = policy
        self.max_sessions = max_sessions
        # Agent Execution Graphs, learned from every call this core sees (predictor/).
        self.predictor = predictor if predictor is not None else Predictor()
        for plugin in policy.plugins:  # plugins that predict (e.g. predicted-ttl-retention) read its graphs
            bind = getattr(plugin, "bind_predictor", None)
            if bind is not None:
                bind(self.predictor)
        self.clock = clock
        self.session_idle_ttl_s = session_idle_ttl_s
        self.single_call_session_ttl_s = single_call_session_ttl_s
        # Sessions whose id the shell inferred (the client sent none) with one call so far, in last-seen
        # order (a subset of `sessions`): forgotten after `single_call_session_ttl_s` idle instead (a flood
        # of one-shot calls does not fill the table for an hour); a second call gives the full idle TTL.
        # This table, `sessions` and `_tenant_seen` are LRU queues (taken from the front, appended at the
        # end), whose front is found in O(1). A plain dict leaves a hole at the front of its entries for
        # each key taken away and walks them all to find the first: with 100,000 sessions evicted one per
        # new call, ~38 µs a call. The two session tables are split over shards (predictor/sharded.py): one
        # OrderedDict of 100,000 sessions rebuilds itself whole when it grows or compacts, ~7 ms at once.
        self._single_call: ShardedLru[None] = ShardedLru(salt=1, start_up=True)
        self._tenant_sessions: dict[str, int] = {}  # sessions in the table per tenant
        self.replicas: dict[ReplicaId, ReplicaView] = {r: ReplicaView(r) for r in replicas}
        self.in_flight: dict[str, _InFlight] = {}
        self.sessions: ShardedLru[_Session] = ShardedLru(salt=0, start_up=True)
        tenants = release.tenants if release is not None else tenants or TenantsConfig()
        if release is None and policy.queue is not None:
            release = ReleaseQueue(policy.queue, tenants)
        self.release = release
        # tenant -> its last call's arrival (the queue's activation)
        self._tenant_seen: OrderedDict[str, float] = OrderedDict()
        self.tenants = tenants
        self.tenant_stats = TenantLedger(tenants)
        self._workflows_seen = 0
        self.moves = 0  # calls of bound workflows that work stealing moved to an idle replica
        self.spills = 0  # calls sent beside another of their workflow to another replica (`_spill_target`)
        self._tick_at = 0.0  # the last tick's time: the holds due by then lapse in `tick` and `tick_more`
        # Replicas an operator is draining (the admin API; the shell's health loop reports them unhealthy,
        # so nothing new goes there): a pinned call still goes to one, only it holds what the call continues.
        self.draining: set[ReplicaId] = set()
        # Calls still in flight on replicas taken out of the pool (`remove_replica`): a replica added back
        # before they end counts them again, and their ends are subtracted here, never from a new view.
        self._departed_calls: dict[ReplicaId, int] = {}
        # Retentions to release before their TTL, (session, replica), for the shell to carry out
        # (`take_releases`; the retention contract's `POST /saga/v1/release`).
        # Bounded: a shell that never drains it keeps the newest.
        self.releases: deque[tuple[str, ReplicaId]] = deque(maxlen=4096)
        # Sessions the client ended while a call of theirs waited in the proxy (`session_ended`)
        self._ending: set[str] = set()
        self._check_stranded = False  # a replica was removed or found down by a call since the last tick
        # With workers: the others with new workflows waiting -> their admissions so far, as last synced;
        # the same at this worker's last admission; since when this worker has left a turn to them
        self._turns: dict[int, int] = {}
        self._turns_at_admit: dict[int, int] = {}
        self._owed_since: float | None = None
        # The same for the release queue, per replica: the others holding calls for it -> their releases
        # to it so far, as last synced; the same at this worker's last release to it; since when this worker
        # has left it to them; and this worker's releases to each replica so far (what it publishes)
        self._lane_turns: dict[ReplicaId, dict[int, int]] = {}
        self._lane_turns_at_release: dict[ReplicaId, dict[int, int]] = {}
        self._lane_owed_since: dict[ReplicaId, float] = {}
        self._released_to: dict[ReplicaId, int] = {}
        self._foreign_tenants = 0  # the other workers' lately active tenants this worker has not seen
        # Engine prompt tokens per estimated one (`_learn_prompt_scale`): the shell scales its estimate by it
        self.prompt_scale = 1.0
        self.admission = (
            None
            if policy.admission is None
            else WorkflowAdmission(policy.admission, self.predictor, tenants.weight, self.replicas)
        )
        # How much slower each replica serves calls than the fastest (replica_speed.py): the load scorer
        # and the moves of bound workflows read it from the views' `slowness`
        stealing = policy.stealing
        self._spill = policy.admission is not None and stealing is not None and stealing.spill
        # the policy's prefix scorer, if any: how much of a call's prompt each replica holds (`_held_shares`)
        self._prefix_scorer: PrefixCacheScorer | None = next(
            (s for s, _ in policy.scorers if isinstance(s, PrefixCacheScorer)), None
        )
        self.speeds = (
            None
            if stealing is None or stealing.slower_above is None
            else ReplicaSpeeds(stealing.slower_above)
        )

    # -- events ---------------------------------------------------------------------------------------

    def first_call_pending(self, session_id: str) -> bool:
        """Whether a session of that id is live here and none of its calls has ended yet (its first one
        waits or runs): the shell tells another agent starting the same conversation at once by it."""
        session = self.sessions.get(session_id)
        return session is not None and session.calls == session.in_flight

    def holds_session(self, session_id: str) -> bool:
        """Whether a session of that id is live here."""
        return self.sessions.get(session_id) is not None

    def call_in_flight(self, session_id: str) -> bool:
        """Whether a session of that id has a call waiting or running: an agent's calls follow one another,
        so the shell looks at who else names its `prompt_cache_key` meanwhile
        (proxy/cache_key_conversations.py)."""
        session = self.sessions.get(session_id)
        return session is not None and session.in_flight > 0

    def request_arrived(self, req: RequestInfo) -> list[Decision]:
        request_id, session_id = req.request_id, req.session_id  # (a Struct's fields: a lookup each)
        if request_id in self.in_flight:
            raise ValueError(f"request id {request_id!r} is already in flight")
        now = self.clock()
        session = self.sessions.touch(session_id)  # the table is in last-seen order
        if session is None:
            if self.max_sessions is not None and len(self.sessions) >= self.max_sessions:
                # a few while over the bound (sessions busy when the table filled are idle by now), so a
                # burst past it shrinks back with the next calls, not only at the idle TTL
                for _ in range(_EVICTIONS_PER_NEW_SESSION):
                    if not self._evict_idle_session() or len(self.sessions) < self.max_sessions:
                        break
            self._workflows_seen += 1
            session = _Session(now, 0, 0, now, req.tenant_id, self._workflows_seen)
            if req.session_inferred:
                self._single_call[session_id] = None
            parent = self.sessions.get(req.parent_session) if req.parent_session else None
            if parent is not None:  # a subagent ranks with the workflow that spawned it
                session.seq = parent.seq
                session.spawned = True
            self.sessions[session_id] = session
            self._count_session(req.tenant_id, 1)
        else:
            session.last_seen = now
            if self._single_call:
                self._single_call.pop(session_id)  # its second call: the full idle TTL
        if self.release is not None and self.release.spec.min_active_tenants > 1:
            self._tenant_seen.pop(req.tenant_id, None)
            self._tenant_seen[req.tenant_id] = now  # in last-seen order: the oldest first
            if len(self._tenant_seen) > _MAX_TENANTS_SEEN:  # a flood of tenant ids: forget the quietest
                del self._tenant_seen[next(iter(self._tenant_seen))]
        filed = self.predictor.call_arrived(
            session_id, req.agent_type, now, req.prompt_tokens, req.tool_names
        )
        if filed != req.agent_type:
            # filed with its owner's types seen once (every graph slot taken): admission and the release
            # order read the figures learned for those, as the predictor does
            req = msgspec.structs.replace(req, agent_type=filed)
        if self.release is not None and request_id in self.release:
            raise ValueError(f"request id {request_id!r} is already held")
        if req.pinned_replica:
            return self._pinned(req)
        if self.admission is not None:
            wf = self.admission.workflows.get(session_id)
            if wf is None:
                if req.parent_session and self.admission.is_admitted(req.parent_session):
                    return self._admit_subagent(req)
                return self._wait_for_admission(req)
            if wf.in_flight and self._spill:  # beside another call of its workflow
                to = self._spill_target(req, wf.replica_id)
                if to is not None:
                    self.spills += 1
                    return self._proceed(msgspec.structs.replace(req, spilled=True), set(), to)
            return self._proceed(req, set(), self._place_admitted(req))
        return self._proceed(req, set())

    def first_token(self, request_id: str) -> list[Decision]:
        flight = self.in_flight.get(request_id)
        if flight is not None and flight.first_token_at is None:
            flight.first_token_at = self.clock()
            self.tenant_stats.first_token(
                flight.req.tenant_id, flight.first_token_at - flight.req.arrived_at, flight.first_token_at
            )
        return []

    def request_cancelled(self, request_id: str) -> list[Decision]:
        """The client went away: a held call is withdrawn; a dispatched one counts as finished."""
        if self.release is not None:
            held = self.release.cancel(request_id)
            if held is not None:
                self._queued_changed(held.replica_id, -1)
                if self.admission is not None:
                    self.admission.call_dropped(held.req.session_id)
                return self._withdrawn(held.req.session_id)
        if self.admission is not None:
            waited = self.admission.cancel(request_id)
            if waited is not None:
                return self._withdrawn(waited.session_id)
        return self.request_finished(request_id)

    def _withdrawn(self, session_id: str) -> list[Decision]:
        """A call of the session left the proxy before any replica had it: a session that never had a call
        served goes with it (an abandoned first call: before, listed for the idle TTL); one ended meanwhile
        is forgotten once none of its calls waits or runs."""
        if self._forget_if_unserved(session_id):
            return self._admit_waiting() if self.admission is not None else []
        return self._end_if_done(session_id) if self._ending else []

    def refuse_waiting(self, reason: str) -> list[Decision]:
        """Refuse, with a 503, every call still waiting in the proxy: new workflows waiting for admission and
        calls held in the release queue, none of which an engine has. `saga serve` at the end of its drain
        (the proxy is stopping): their clients get an answer that says so, not a closed connection."""
        decisions: list[Decision] = []
        if self.release is not None:
            for replica_id in list(self.release.lanes):
                for held in self.release.drain(replica_id):
                    self._queued_changed(replica_id, -1)
                    decisions.append(self._refuse(held.req, reason, 503))
        if self.admission is not None:
            admission = self.admission
            for req in list(admission.waiting.items()):
                admission.cancel(req.request_id)
                decisions.append(self._refuse(req, reason, 503))
        return decisions

    def dispatch_failed(self, request_id: str, replica_down: bool = True) -> list[Decision]:
        """The call failed on its replica before any response byte: try another (not one it tried). The
        replica is marked down when it could not be reached (`replica_down`); one that answered an error is
        alive, and marking it down for one call would let one bad request take the whole fleet down."""
        flight = self.in_flight.pop(request_id, None)
        if flight is None:
            return []
        replica = self._call_ended_on(flight)
        if replica is not None and replica_down:
            replica.healthy = False
            self._check_stranded = True  # the next tick refuses the waiting calls no replica is left for
            self._speed_unknown(replica)
        if self._session_done(flight, self.clock()) and self.admission is not None:
            self.admission.withdrawn(flight.req.session_id)
        if flight.req.pinned_replica:  # no other replica holds what it names: no retry elsewhere
            self.predictor.call_failed(flight.req.session_id)
            return [_pin_lost(flight.req, "failed it", status=502)]
        return self._proceed(flight.req, flight.tried)

    def request_finished(self, request_id: str, usage: Usage | None = None) -> list[Decision]:
        flight = self.in_flight.pop(request_id, None)
        if flight is None:
            return []
        self._call_ended_on(flight)
        now = self.clock()  # one reading for the whole event (the same in the DES, whose clock stands still)
        req = flight.req
        current = self._session_done(flight, now)
        served = usage is not None  # none: refused, failed or cancelled before the engine's usage came
        usage = usage or Usage()
        session_id = req.session_id  # (a Struct's fields: a lookup each)
        prompt_tokens = usage.prompt_tokens or req.prompt_tokens
        if prompt_tokens != req.prompt_tokens and served and not req.pinned_replica:
            self._learn_prompt_scale(prompt_tokens, req.prompt_tokens)
        completion_tokens = usage.completion_tokens
        if served:  # (the engine's counts only: `prompt_tokens` above may be the shell's estimate)
            self.tenant_stats.tokens_used(
                req.tenant_id, usage.prompt_tokens, completion_tokens, usage.cached_tokens, now
            )
        if current:
            self.predictor.call_finished(
                session_id, now, prompt_tokens, completion_tokens, usage.finish_reason, usage.tool_names
            )
        for on_finish in self.policy.finish_hooks:
            on_finish(req, flight.replica_id, usage)
        # (load 0: not sampled at its dispatch; several choices: tokens of all, decoded side by side)
        if self.speeds is not None and served and flight.load and req.choices == 1:
            self._measure_speed(flight, now, completion_tokens, prompt_tokens - usage.cached_tokens)
        retention, replica_id = self.policy.retention, flight.replica_id
        released = False
        if flight.retained and retention is not None and retention.release_after(req, replica_id, usage):
            self.releases.append((session_id, replica_id))
            released = True
        session = flight.session
        if flight.retained and not released:
            if current and session is not None:
                session.retained_on = replica_id  # (what the session's end or move gives up)
            elif session_id not in self.sessions:  # its session ended while it ran: nothing will use it
                self.releases.append((session_id, replica_id))
                released = True
        decisions: list[Decision] = []
        if self.release is not None:
            if current:  # (an ended session's history is forgotten: filed again, it stayed for good)
                self.release.finished(req, usage)
            decisions = self._pump(flight.replica_id)
        if self.admission is not None:
            admission = self.admission
            if flight.first_token_at is not None:
                admission.prefill_seen(
                    flight.first_token_at - req.arrived_at, prompt_tokens, usage.cached_tokens
                )
            # a hold that costs more than the re-prefill it saves (`hold_price`): its retention goes too
            let_go = current and admission.finished(session_id, prompt_tokens, completion_tokens, now, served)
            if let_go and flight.retained and not released:
                self.releases.append((session_id, replica_id))
                if session is not None:
                    session.retained_on = None
            decisions += self._admit_waiting()
        if current and self._ending:
            decisions += self._end_if_done(session_id)
        return decisions

    def _measure_speed(self, flight: _InFlight, now: float, completion_tokens: int, prefilled: int) -> None:
        """A call sent to a replica with no engine queue ended: its time is a sample of the replica's speed
        if the replica still has none (calls waiting for KV there, or preempted, take a time of its load,
        not of its speed: homogeneous replicas under KV pressure measured 1.5-2x apart, and moving
        workflows off the one slowed cost 20% of task time in the DES)."""
        speeds = self.speeds
        replica = self.replicas.get(flight.replica_id)
        if speeds is None or replica is None or replica.waiting:
            return
        seconds = now - flight.dispatched_at
        if speeds.observe(flight.replica_id, flight.load, seconds, completion_tokens, now, max(0, prefilled)):
            self._speeds_changed(speeds)

    def _speeds_changed(self, speeds: ReplicaSpeeds) -> None:
        slowness = speeds.slowness
        for view in self.replicas.values():
            view.slowness = slowness.get(view.replica_id, 1.0)

    def _learn_prompt_scale(self, engine_tokens: int, estimated: int) -> None:
        """The shell estimates a prompt's tokens from its bytes (bytes / 4) before any engine counts them, and
        admission sizes a new workflow by it: with a tokenizer that counts otherwise, every new workflow
        reserved that much more or less (1.9x on the simulator's, where 8 tasks that fit in the KV reserved
        20,575 tokens of 16,000 and new workflows waited with the KV at 9%). `prompt_scale`, which the shell
        multiplies its estimate by, follows the engines' counts: a geometric moving average of engine over
        estimate (each call's ratio clamped to 1/4..4: an image's base64 is no text; the scale to 0.1..10). A
        continued response (`previous_response_id`: the engine counts what it stored) teaches nothing."""
        if estimated <= 0 or engine_tokens <= 0:
            return
        ratio = min(4.0, max(0.25, engine_tokens / estimated))
        self.prompt_scale = min(10.0, max(0.1, self.prompt_scale * ratio**_PROMPT_SCALE_WEIGHT))

    def take_releases(self) -> list[tuple[str, ReplicaId]]:
        """The retentions the policy gave up since the last call, (session id, replica id): the shell asks
        each replica to release them (best effort: a replica that holds none, or has no retention contract,
        loses nothing). Drained by the call."""
        got = list(self.releases)
        self.releases.clear()
        return got

    def replica_stats(self, stats: ReplicaStats) -> list[Decision]:
        replica = self.replicas.get(stats.replica_id)
        if replica is None:
            return []
        was_healthy = replica.healthy
        for field in ("healthy", "waiting", "running", "kv_usage", "kv_capacity_tokens", "cpu_kv_tier"):
            value = getattr(stats, field)
            if value is not None:
                setattr(replica, field, value)
        decisions: list[Decision] = []
        if self.release is not None:
            if not replica.healthy:
                decisions = self._rehome(replica.replica_id)
            else:
                decisions = self._pump(replica.replica_id)
        if was_healthy and not replica.healthy:
            self._speed_unknown(replica)
        if self.admission is not None:
            if replica.healthy:
                decisions += self._admit_waiting()
            elif was_healthy:  # (reported down every health round while it stays down: once is enough)
                decisions += self._refuse_stranded()
        return decisions

    def _speed_unknown(self, replica: ReplicaView) -> None:
        """A replica went down: it may come back restarted on other hardware, so what was measured of its
        speed goes (replica_speed.py `forget`); it counts as fast as the others until measured again."""
        if self.speeds is not None:
            self.speeds.forget(replica.replica_id)
            self._speeds_changed(self.speeds)

    def foreign_load(self, replica_id: ReplicaId, reserved_tokens: int, in_flight: int) -> list[Decision]:
        """The other workers of `saga serve --workers N` now reserve `reserved_tokens` of KV on the replica
        and have `in_flight` calls on it, in all (proxy/load_sync.py, every few ms): admission counts their
        reservations as capacity already taken and placement, gates and stealing their calls as calls already
        there, so N workers admit and place as one core would (stale by one sync). Less than before may make
        room: held or waiting calls that now fit are returned. Never called in a single-process proxy."""
        replica = self.replicas.get(replica_id)
        if replica is None:
            return []
        fewer_calls = in_flight < replica.foreign_in_flight
        replica.in_flight += in_flight - replica.foreign_in_flight
        replica.foreign_in_flight = in_flight
        freed = False
        if self.admission is not None:
            freed = self.admission.foreign_reserved(replica_id, reserved_tokens)
        else:
            replica.reserved_tokens += reserved_tokens - replica.foreign_reserved_tokens
            replica.foreign_reserved_tokens = reserved_tokens
        decisions: list[Decision] = []
        if not replica.healthy:
            return decisions
        if fewer_calls and self.release is not None:
            decisions = self._pump(replica_id)
        if freed and self.admission is not None:
            decisions += self._admit_waiting()
        return decisions

    def foreign_waiting(self, workflows: int, turns: dict[int, int] | None = None) -> list[Decision]:
        """The other workers have `workflows` new workflows waiting for admission (proxy/load_sync.py): work
        waiting for KV, which the cost-aware hold weighs as it weighs this worker's own. `turns`: for each
        other worker with workflows waiting, how many it has admitted so far; room this worker frees goes to
        them in turn (`_owes_a_turn`). Returns what this worker's waiting workflows may take now."""
        admission = self.admission
        if admission is None:
            return []
        admission.foreign_waiting = workflows
        turns = turns or {}
        if not turns:
            self._owed_since = None  # nobody waits: no turn is owed (a later one starts its own wait)
        if turns == self._turns and not (turns and len(admission.waiting)):
            return []
        self._turns = turns  # (while they wait and so does a workflow here, looked at each sync)
        return self._admit_waiting()

    def own_waiting(self) -> int:
        """New workflows waiting in this worker's admission (what it publishes to the others)."""
        return 0 if self.admission is None else len(self.admission.waiting)

    def own_admitted(self) -> int:
        """New workflows this worker's admission admitted so far (what it publishes to the others)."""
        return 0 if self.admission is None else self.admission.admitted

    def own_load(self) -> list[tuple[ReplicaId, int, int, int, int]]:
        """(replica, KV tokens reserved, calls in flight, calls held in the release queue, calls released from
        there so far) of this worker alone, for every replica: what it publishes to the other workers (the
        totals less what `foreign_load` added)."""
        admission = self.admission
        released = self._released_to
        return [
            (
                r.replica_id,
                0 if admission is None else admission.own_reserved(r.replica_id),
                r.in_flight - r.foreign_in_flight,
                r.queued,
                released.get(r.replica_id, 0),
            )
            for r in self.replicas.values()
        ]

    def foreign_lanes(self, turns: dict[ReplicaId, dict[int, int]]) -> list[Decision]:
        """The other workers holding calls in their release queues: per replica, worker -> the calls it has
        released to that replica so far (proxy/load_sync.py, every sync). Room on a replica then goes to them
        in turn (`_owes_a_lane_turn`), as admission's room does. Returns what this worker's held calls may
        take now (looked at each sync while another worker holds calls for a replica this one holds for)."""
        release = self.release
        if release is None or not (turns or self._lane_turns):
            return []
        self._lane_turns = turns
        for replica_id in [r for r in self._lane_owed_since if r not in turns]:
            del self._lane_owed_since[replica_id]  # nobody holds calls for it any more: no turn is owed
        decisions: list[Decision] = []
        for replica_id, replica in self.replicas.items():
            if replica.queued and replica.healthy:
                decisions += self._pump(replica_id)
        return decisions

    def own_tenants(self, limit: int) -> tuple[int, list[str]]:
        """How many tenants sent this worker calls within the release queue's `active_window_s`, and the
        latest `limit` of them (what it publishes, so `min_active_tenants` counts every worker's): none unless
        that bound is above 1."""
        if self.release is None or self.release.spec.min_active_tenants <= 1:
            return 0, []
        self._forget_quiet_tenants()
        seen = self._tenant_seen
        return len(seen), list(itertools.islice(reversed(seen), limit))

    def share_bounds(self, held: SharedCount, waiting: SharedCount) -> None:
        """With workers (proxy/load_sync.py, once): the calls every worker's release queue holds and the
        workflows waiting in every worker's admission, as they are, so that `max_queued` and `max_waiting`
        bound the workers together (proxy/scheduler/shared_bound.py)."""
        if self.release is not None:
            self.release.shared = held
            held.publish(len(self.release))
        if self.admission is not None:
            self.admission.shared = waiting
            waiting.publish(len(self.admission.waiting))

    def foreign_tenants(self, unseen: int) -> None:
        """The other workers have `unseen` lately active tenants this worker has not (proxy/load_sync.py):
        with them, enough tenants may compete for the release queue to turn it on."""
        self._foreign_tenants = unseen

    def tick(self, lapse_limit: int = 0) -> list[Decision]:
        """Periodic housekeeping: the predictor ends sessions silent past its horizon; forget idle sessions;
        with a release queue, move the calls held for a replica that is down or gone, and release what the
        gate allows; lapse the admission holds due by now (and, while new workflows wait, those sized from
        the predictor's prior on replicas with no call in flight) and admit waiting workflows where there is
        room.
        `lapse_limit` (0: none): lapse at most that many holds' wake-ups here, and the rest of those due by
        this tick's time in `tick_more` steps while `ticking()` (the proxy: each step a short turn of its
        event loop, where ~20,000 lapses at once held it 8-12 ms; the same holds lapse as in one tick); the
        predictor ends as many sessions a step (those with a call since, not)."""
        self.predictor.tick(self.clock(), lapse_limit)
        self._forget_idle_sessions(self.clock() - self.session_idle_ttl_s)
        if self.max_sessions is not None:  # a burst past the bound, busy then: evicted once idle
            for _ in range(_EVICTIONS_PER_TICK):
                if len(self.sessions) <= self.max_sessions or not self._evict_idle_session():
                    break
        if self._single_call:
            self._forget_idle_sessions(self.clock() - self.single_call_session_ttl_s, self._single_call)
        decisions: list[Decision] = []
        if self.release is not None:
            for replica_id in list(self.release.lanes):
                replica = self.replicas.get(replica_id)
                if replica is None or not replica.healthy:
                    decisions += self._rehome(replica_id)
                else:
                    decisions += self._pump(replica_id)
        if self.admission is not None:
            self._tick_at = self.clock()
            admission = self.admission
            admission.expire(self._tick_at, lapse_limit)
            if (len(admission.waiting) or admission.foreign_waiting) and admission.has_cold_holds():
                # holds sized from the prior keep no idle replica from new work (admission.py)
                idle = {
                    r.replica_id
                    for r in self.replicas.values()
                    if r.healthy and not r.in_flight and not r.queued
                }
                if idle:
                    admission.yield_cold_holds(idle)
            if self._check_stranded:
                self._check_stranded = False
                decisions += self._refuse_stranded()
            decisions += self._admit_waiting()
        return decisions

    def ticking(self) -> bool:
        """Holds due by the last tick's time are left to lapse, or sessions it found ended to end (`tick`
        with a `lapse_limit`)."""
        return (self.admission is not None and self.admission.due(self._tick_at)) or self.predictor.ending()

    def tick_more(self, lapse_limit: int) -> list[Decision]:
        """The next step of the last tick: at most `lapse_limit` more sessions it found ended end in the
        predictor and as many holds due by its time lapse, then waiting workflows are admitted where there
        is room."""
        self.predictor.end_more(lapse_limit)
        if self.admission is None:
            return []
        self.admission.expire(self._tick_at, lapse_limit)
        return self._admit_waiting()

    # -- replica set ----------------------------------------------------------------------------------

    def add_replica(self, replica_id: ReplicaId) -> None:
        """Route to a replica (again: one being drained takes new work once more). One not in the set starts
        down until the shell's first probe reports it up, with its KV capacity: taken up at once, its
        capacity unknown (room for any workflow), it took every workflow waiting for admission."""
        if replica_id not in self.replicas:
            view = self.replicas[replica_id] = ReplicaView(replica_id, healthy=False)
            view.in_flight = self._departed_calls.pop(replica_id, 0)
        self.draining.discard(replica_id)

    def serving(self) -> list[ReplicaId]:
        """The replicas that take calls: the healthy ones, and those being drained (pinned calls only)."""
        draining = self.draining
        return [r.replica_id for r in self.replicas.values() if r.healthy or r.replica_id in draining]

    def remove_replica(self, replica_id: ReplicaId) -> None:
        """Stop routing to a replica; calls already on it still finish and are accounted for."""
        view = self.replicas.pop(replica_id, None)
        own_calls = 0 if view is None else view.in_flight - view.foreign_in_flight
        if own_calls > 0:
            self._departed_calls[replica_id] = own_calls
        self.draining.discard(replica_id)
        if self.speeds is not None:
            self.speeds.forget(replica_id)
        for per_replica in (self._lane_turns, self._lane_turns_at_release, self._lane_owed_since):
            per_replica.pop(replica_id, None)  # (its held calls were re-homed when it went down or away)
        if self.admission is not None:
            self.admission.replica_gone(replica_id)
            self._check_stranded = True  # the next tick refuses the waiting calls no replica is left for

    def _call_ended_on(self, flight: _InFlight) -> ReplicaView | None:
        """One call of this process's on its replica ended: its view counts one fewer (or, the replica taken
        out of the pool, its departed calls do), and the KV it took beside its workflow is free. The view, if
        the replica is in the pool."""
        replica_id = flight.replica_id
        if flight.beside and self.admission is not None:
            self.admission.give_back_beside(replica_id, flight.beside)
        replica = self.replicas.get(replica_id)
        if replica is not None:
            replica.in_flight -= 1
            return replica
        left = self._departed_calls.get(replica_id, 0) - 1
        if left > 0:
            self._departed_calls[replica_id] = left
        else:
            self._departed_calls.pop(replica_id, None)
        return None

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view of the datastore for the admin API and logs."""
        return {
            "policy": self.policy.name,
            "replicas": [msgspec.to_builtins(r) for r in self.replicas.values()],
            "in_flight": len(self.in_flight),
            "queued": len(self.release) if self.release is not None else 0,
            "sessions": len(self.sessions),
            **(
                {"admission": self.admission.snapshot(), "moves": self.moves, "spills": self.spills}
                if self.admission
                else {}
            ),
        }

    # -- internals ------------------------------------------------------------------------------------

    def session_ended(self, session_id: str) -> list[Decision]:
        """The client ended the session (`X-Session-End`, the admin API): the predictor learns the end and
        the session is forgotten now (its calls in flight still finish, accounted on their replicas alone:
        the id may name a new session by then), or, while a call of it waits in the proxy (release queue or
        admission), once no call of it waits or runs."""
        session = self.sessions.get(session_id)
        if session is None:
            return []
        self.predictor.session_ended(session_id)
        if self._holds_call(session_id):  # (its KV kept for it stays: that call still goes, and uses it)
            self._ending.add(session_id)  # (bounded by the sessions: forgetting one drops it)
            return []
        self._give_up_retained(session_id, session)
        self._forget_session(session_id)
        # its reservation is free now: a waiting workflow may fit
        return self._admit_waiting() if self.admission is not None else []

    def _give_up_retained(self, session_id: str, session: _Session) -> None:
        """The session is over: the KV its last call asked a replica to keep is of no use now, and held it
        until the TTL ran out (the predictor's tool gap, up to minutes), ranked with its workflow, so newer
        work on that replica waited for it (6.9 s against 0.07 s: the fifth review). (Giving it up also when
        work stealing moves the workflow was tried: the nine declared cells' TCT went up 0.55%, from -2.1%
        to +4.4% a cell; docs/results/reliability.md, "A fifth adversarial review".)"""
        retained_on = session.retained_on
        if retained_on is not None:
            self.releases.append((session_id, retained_on))
            session.retained_on = None

    def _end_if_done(self, session_id: str) -> list[Decision]:
        """A session ended while a call of it waited in the proxy: forgotten once none waits or runs, and
        the room it held offered to the waiting workflows."""
        if not self._forget_if_ended(session_id):
            return []
        return self._admit_waiting() if self.admission is not None else []

    def _forget_if_ended(self, session_id: str) -> bool:
        """`_end_if_done` without the admission: True when the session was forgotten."""
        if session_id not in self._ending:
            return False
        session = self.sessions.get(session_id)
        if session is not None and (session.in_flight or self._holds_call(session_id)):
            return False
        self._ending.discard(session_id)
        if session is not None:
            self._give_up_retained(session_id, session)
            self._forget_session(session_id)
        return session is not None

    def _holds_call(self, session_id: str) -> bool:
        """Whether a call of the session waits in the proxy (release queue or admission)."""
        return (self.release is not None and self.release.holds_session(session_id)) or (
            self.admission is not None and self.admission.is_waiting(session_id)
        )

    def _forget_session(self, sid: str, task_done: bool = True) -> None:
        session = self.sessions.pop(sid)
        assert session is not None, sid
        self._count_session(session.tenant_id, -1)
        self._single_call.pop(sid)
        self._ending.discard(sid)
        self.predictor.forget(sid)
        if task_done:
            self.tenant_stats.task_done(
                session.tenant_id, session.last_seen - session.started, session.last_seen
            )
        for on_session_end in self.policy.session_end_hooks:
            on_session_end(sid)
        if self.release is not None:
            self.release.forget(sid)
        if self.admission is not None:
            self.admission.end(sid)

    def _forget_idle_sessions(self, horizon: float, among: ShardedLru[None] | None = None) -> None:
        """Forgets the sessions last seen before `horizon` with nothing in flight or held (`among` these, in
        last-seen order, default all). The table is in last-seen order (arrival and finish move a session to
        its end), so only its expired head is read: a tick costs the sessions it forgets plus the expired
        ones still busy, not the whole table."""
        idle = []
        sessions = self.sessions
        for part in among.parts() if among is not None else sessions.parts():  # (each in last-seen order)
            for sid in part:
                s = sessions[sid]
                if s.last_seen >= horizon:
                    break
                if s.in_flight == 0:
                    idle.append(sid)
        for sid in idle:
            if not self._holds_call(sid):  # a call of it waits in the proxy: not idle
                self._forget_session(sid)

    def _evict_idle_session(self) -> bool:
        """Forgets the least recently seen session with nothing in flight or held (if there is one): first
        among the one-call sessions the shell inferred (those go after the short TTL anyway), so a flood of
        one-shot calls pushes out its own kind, not the agents' sessions waiting on a tool call; then, among
        the `_EVICTION_SCAN` least recently seen idle sessions, the first of a tenant holding more than an
        equal share of the table, so one tenant opening sessions pushes out its own, not another tenant's
        workflows waiting on a tool call (with client API keys, 1,200 sessions of one took another's)."""
        for sid in self._idle_sessions(self._single_call):
            self._forget_session(sid)
            return True
        counts, total = self._tenant_sessions, len(self.sessions)
        # (one tenant, or one session each: none is over its share; the least recently seen idle one goes)
        shares = 1 < len(counts) < total
        oldest: str | None = None
        for sid in itertools.islice(self._idle_sessions(self.sessions), _EVICTION_SCAN if shares else 1):
            tenant = self.sessions[sid].tenant_id
            if not shares or counts.get(tenant, 0) * len(counts) > total:  # a tenant over an equal share
                self._forget_session(sid)
                return True
            oldest = oldest or sid
        if oldest is None:
            return False
        self._forget_session(oldest)
        return True

    def _idle_sessions(self, table: ShardedLru[Any]) -> Iterator[str]:
        """The sessions of `table` with nothing in flight or held, least recently seen first (a large table's
        shards in turn). Forgetting one ends the walk (the table changes under it)."""
        sessions = self.sessions
        for part in table.parts_in_turn():
            for sid in part:
                if sessions[sid].in_flight == 0 and not self._holds_call(sid):
                    yield sid

    def _count_session(self, tenant: str, change: int) -> None:
        count = self._tenant_sessions.get(tenant, 0) + change
        if count > 0:
            self._tenant_sessions[tenant] = count
        else:
            self._tenant_sessions.pop(tenant, None)

    def _pinned(self, req: RequestInfo) -> list[Decision]:
        """A call naming state that only its pinned replica holds goes there at once, admitted (its workflow
        lives there already), also while an operator drains that replica, or is refused while the replica is
        down or gone: it would fail anywhere else."""
        replica = self.replicas.get(req.pinned_replica)
        if replica is None or not (replica.healthy or replica.replica_id in self.draining):
            self.predictor.call_failed(req.session_id)
            return [_pin_lost(req, "is down" if replica is not None else "is no longer served")]
        admission = self.admission
        if admission is not None and not admission.is_admitted(req.session_id):
            admission.admit_joined(req, replica.replica_id)
        # not held in the release queue either: its lane may not release (a draining replica is not healthy)
        # and the call has nowhere else to go
        return [self._dispatch(req, replica.replica_id, set())]

    def _refuse(self, req: RequestInfo, reason: str, status: int) -> Reject:
        """Refuse `req`; a session none of whose calls was ever dispatched, held or waiting is forgotten
        with it (a client retrying after 429s and 503s filed one session per refusal, kept for the idle
        TTL)."""
        session_id = req.session_id
        self.predictor.call_failed(session_id)
        if self.admission is not None:
            self.admission.call_dropped(session_id)
        if not self._forget_if_unserved(session_id) and self._ending:
            self._forget_if_ended(session_id)  # ended while this call waited: the end is due now
        return Reject(req.request_id, reason, status=status)

    def _forget_if_unserved(self, session_id: str) -> bool:
        """Forget a session none of whose calls was ever dispatched, and none held or waiting (its first call
        refused, or withdrawn while it waited: clients retrying after 429s, 503s or their own timeouts filed
        one session per try, kept for the idle TTL); True when it was."""
        session = self.sessions.get(session_id)
        if session is None or session.calls or session.in_flight or self._holds_call(session_id):
            return False
        self._forget_session(session_id, task_done=False)
        return True

    def _no_replica(self) -> str:
        """Why no replica takes a new call: an operator's drain said apart from failed health checks (the
        view of a replica being drained is not `healthy`: it takes no new work)."""
        draining = len(self.draining)
        if not draining:
            return "no healthy replica"
        if draining >= len(self.replicas):
            return "no replica takes new calls: every one is being drained"
        return f"no replica takes new calls: {draining} being drained, the others down"

    def _pick(self, req: RequestInfo, tried: set[ReplicaId]) -> ReplicaId | Reject:
        candidates = [r for r in self.replicas.values() if r.healthy and r.replica_id not in tried]
        replica_id = self.policy.route(req, candidates) if candidates else None
        if replica_id is None:
            if tried:
                reason = "every healthy replica failed this request"
            elif candidates:  # healthy replicas, none of its model (a review: "the others down")
                reason = _NO_REPLICA_FOR_MODEL
            else:
                reason = self._no_replica()
            return self._refuse(req, reason, 503)
        return replica_id

    def _proceed(
        self, req: RequestInfo, tried: set[ReplicaId], to: ReplicaId | None = None
    ) -> list[Decision]:
        """Route `req` (to `to` when admission placed it): dispatch now, or hold it in the release queue."""
        if self.release is not None and self._queue_active():
            return self._hold(req, tried, to)
        replica_id = to if to is not None else self._pick(req, tried)
        return [replica_id if isinstance(replica_id, Reject) else self._dispatch(req, replica_id, tried)]

    def _place_admitted(self, req: RequestInfo) -> ReplicaId | None:
        """Where a call of an admitted workflow goes without asking the policy: an idle replica when work
        stealing moves it, else its bound replica when the policy's affinity outweighs every other scorer
        (the policy would pick it anyway: this skips scoring every replica); None: route it as usual."""
        assert self.admission is not None
        wf = self.admission.workflows.get(req.session_id)
        bound = self.replicas.get(wf.replica_id) if wf is not None else None
        if wf is None or bound is None or not bound.healthy:
            return None
        spec, admission = self.policy.stealing, self.admission
        if not takes_prompt(bound, req.prompt_tokens):  # its context outgrew that replica's KV: refused there
            to = self._outgrown(req, wf.footprint, bound)
            if to is not None:
                self.moves += 1
                return to
        # Stealing's two moves need a backlog on the bound replica, the speed move a slower bound replica
        # (stealing.py): without either, no closure, no scan.
        slower = bound.slowness > 1.0
        if spec is not None and (bound.waiting or bound.queued or slower):
            footprint = max(wf.footprint, req.prompt_tokens)
            movable: Sequence[ReplicaView] = list(self.replicas.values())
            for f in self.policy.filters:  # a move goes only where routing could send the call (its model)
                movable = f.filter(req, movable)

            def has_room(r: ReplicaView) -> bool:
                return admission.has_room(r, footprint, req.prompt_tokens)

            to = None
            if slower and spec.slower_above is not None:
                to = speed_target(bound, movable, has_room, spec.slower_above, footprint)
            if to is None and (bound.waiting or bound.queued):
                to = steal_target(spec, req, bound, movable, has_room, footprint)
            if to is not None:
                self.moves += 1
                return to
        filters = self.policy.filters
        if self.policy.affinity_decides and (not filters or all(f.filter(req, [bound]) for f in filters)):
            return bound.replica_id
        return None

    def _spill_target(self, req: RequestInfo, bound_id: ReplicaId) -> ReplicaId | None:
        """Where a call that comes beside another call of its admitted workflow spills (stealing.py
        `spill_target`), the workflow staying bound to `bound_id`; None: it goes on as any call of its
        workflow does. It spills only where its bound replica has no KV room left for what it takes of its
        own there (`_own_tokens`), beside the reservations there and the other calls running beside their
        workflows, or a backlog that makes it wait longer than recomputing its prompt elsewhere (work
        stealing's rule). Before, such calls all went to the bound replica: 8 parallel calls of one session
        ran there at 1.45x round-robin's time while the other replica idled, and an app sending one
        `prompt_cache_key` for all its calls was served at 0.61x round-robin's rate."""
        admission, spec = self.admission, self.policy.stealing
        assert admission is not None and spec is not None
        bound = self.replicas.get(bound_id)
        prompt = req.prompt_tokens
        if bound is None or not bound.healthy or req.pinned_replica or not takes_prompt(bound, prompt):
            return None  # (a prompt past its replica's KV moves the workflow: `_outgrown`)
        tokens = admission.call_tokens(req)
        replicas = list(self._for_model(req, self.replicas.values()))
        cached = self._held_shares(req, replicas)
        held = {r.replica_id: share for r, share in zip(replicas, cached, strict=True)} if cached else {}

        def own(r: ReplicaView) -> int:
            return _own_tokens(tokens, prompt, held.get(r.replica_id, 0.0))

        backlog = bound.waiting + bound.queued
        waits = backlog > 0 and backlog * spec.call_s / max(1, bound.running) > recompute_s(spec, prompt)
        if not waits and admission.fits(bound, own(bound), prompt):
            return None
        return spill_target(bound, replicas, lambda r: admission.fits(r, own(r), prompt), prompt, cached)

    def _held_shares(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> Sequence[float]:
        """The share of the call's prompt each of `replicas` holds, by the policy's prefix scorer's index
        (with KV events, the replicas' own word); () without one, or for a call with no prefix hashes."""
        prefix = self._prefix_scorer
        return prefix.held_each(req, replicas) if prefix is not None and req.prefix_hashes else ()

    def _outgrown(self, req: RequestInfo, footprint: int, bound: ReplicaView) -> ReplicaId | None:
        """Where a call goes whose prompt is past its bound replica's KV (a replica restarted smaller, or a
        conversation grown past a small replica of a mixed fleet): where placement sends it among the
        replicas that take the prompt and have room for its workflow, else among those that take it; None:
        none takes it (it stays, and its replica answers it). Before, the workflow stayed bound there, and
        every later call of it was refused with the 400 of a prompt past the context."""
        assert self.admission is not None
        admission = self.admission
        replicas = self._for_model(req, [r for r in self.replicas.values() if r is not bound])
        room = admission.healthy_with_room(replicas, max(footprint, req.prompt_tokens), req.prompt_tokens)
        if not room:
            room = self._takers(req, [r for r in replicas if r.healthy])
        return self.policy.route(req, room) if room else None

    def _for_model(self, req: RequestInfo, replicas: Collection[ReplicaView]) -> Collection[ReplicaView]:
        """The `replicas` routing could send `req` to (its model's: the policy's filters). Where room is
        weighed among replicas of every model, a small replica, the only one of its model, was passed over for
        a larger one of another model with room, and its workflow waited for ever (a review)."""
        if not self.policy.filters:
            return replicas
        return self.policy.candidates(req, list(replicas))

    @staticmethod
    def _takers(req: RequestInfo, replicas: Iterable[ReplicaView]) -> list[ReplicaView]:
        """Those of `replicas` whose KV (known) is not smaller than the call's prompt (admission.py)."""
        prompt = req.prompt_tokens
        return [r for r in replicas if takes_prompt(r, prompt)]

    def _taking(self, req: RequestInfo, healthy: Collection[ReplicaView]) -> list[ReplicaView]:
        """`_takers` of the `healthy` replicas, if any: the prompt goes past the others' context. None
        takes it: all of them (one answers it, with an error)."""
        return self._takers(req, healthy) or list(healthy)

    def _admit_subagent(self, req: RequestInfo) -> list[Decision]:
        """A subagent of an admitted workflow is part of it: admitted at once, never queued behind new
        workflows (its parent waits for it while holding its own KV), on a replica with room for its
        footprint where one has it, else where the policy routes it."""
        assert self.admission is not None
        admission = self.admission
        replicas = self._for_model(req, self.replicas.values())
        room = admission.healthy_with_room(replicas, admission.footprint_of_new(req), req.prompt_tokens)
        if not room:
            room = self._taking(req, [r for r in replicas if r.healthy])
        replica_id = self.policy.route(req, room) if room else None
        if replica_id is None:
            return [self._refuse(req, self._no_replica(), 503)]
        admission.admit_joined(req, replica_id)
        return self._proceed(req, set(), replica_id)

    def _wait_for_admission(self, req: RequestInfo) -> list[Decision]:
        """A new workflow's call waits for a replica with room for its footprint (or is refused now)."""
        assert self.admission is not None
        if not any(r.healthy for r in self.replicas.values()):
            return [self._refuse(req, self._no_replica(), 503)]
        admission = self.admission
        alone = not len(admission.waiting)
        rank: float | None = None
        if alone:
            # Nothing waits: `_admit_waiting` would take this call first, so route it as it would (the same
            # footprint, candidates and one `route`) without the queue's push, peek and pop. Its rank is
            # taken first all the same, as `wait` took it: least-work's look-up of the predictor's remaining
            # work may refresh a graph's chain, which must happen at the same moment for every later
            # prediction to stay the same.
            rank = admission.rank_of_new(req, self.clock())
            footprint = admission.footprint_of_new(req)
            room = admission.healthy_with_room(
                self._for_model(req, self.replicas.values()), footprint, req.prompt_tokens
            )
            # (owing another worker a turn, it queues, as behind a workflow of this worker's own)
            owed = bool(room) and bool(self._turns) and self._owes_a_turn(self.clock())
            replica_id = (
                None if owed else self.policy.route(req, room) if room else self._past_every_replica(req)
            )
            if replica_id is not None:
                admission.admit_at_once(req, replica_id)
                self._took_a_turn()
                return self._proceed(req, set(), replica_id)
        if self.policy.filters and not self.policy.has_candidate(
            req, [r for r in self.replicas.values() if r.healthy]
        ):  # the replicas serving its model are all down or drained: it would wait for ever
            return [self._refuse(req, _NO_REPLICA_FOR_MODEL, 503)]
        if not admission.wait(req, self.clock(), rank):
            limit = admission.spec.max_waiting
            return [self._refuse(req, f"the proxy's admission queue is full ({limit} waiting)", 429)]
        # alone, it found no room just now (`_admit_waiting` would route it again, to no avail): it waits
        return [] if alone else self._admit_waiting()

    def _admit_waiting(self) -> list[Decision]:
        """Admit waiting workflows, in the fair order, while a replica has room for the next one."""
        assert self.admission is not None
        admission = self.admission
        if not len(admission.waiting):
            return []
        now = self.clock()
        decisions = self._admit_overdue(now) if admission.spec.max_wait_s is not None else []
        while (head := admission.peek(now)) is not None:
            admitted = self._admit_one(head, now)
            if admitted is None:
                if len(admission.waiting_models) > 1:  # replicas serving other models may have room
                    decisions += self._admit_other_models(head.model, now)
                break
            decisions += admitted
        return decisions

    def _admit_overdue(self, now: float) -> list[Decision]:
        """Admit the calls that waited `max_wait_s` for room where placement sends them among the healthy
        replicas, room or not (none healthy: refused, as a new call is)."""
        assert self.admission is not None
        admission = self.admission
        decisions: list[Decision] = []
        while (req := admission.take_overdue(now)) is not None:
            if admission.is_admitted(req.session_id):  # its workflow was admitted meanwhile
                decisions += self._proceed(req, set())
                continue
            healthy = [r for r in self.replicas.values() if r.healthy]
            taking = self._taking(req, self._for_model(req, healthy))
            replica_id = self.policy.route(req, taking or healthy) if healthy else None
            if replica_id is None:
                decisions.append(self._refuse(req, self._no_replica(), 503))
                continue
            admission.admit_overdue(req, replica_id)
            decisions += self._proceed(req, set(), replica_id)
            decisions += self._with_workflow(req.session_id)
        return decisions

    def _admit_one(self, req: RequestInfo, now: float) -> list[Decision] | None:
        """Admit the waiting call `req` where placement sends it among the replicas with room for its
        workflow's footprint (a later call of a workflow admitted meanwhile: at once); None when none has."""
        assert self.admission is not None
        admission = self.admission
        if admission.is_admitted(req.session_id):
            admission.admit(req, "", now)
            return self._proceed(req, set()) + self._with_workflow(req.session_id)
        room = admission.healthy_with_room(
            self._for_model(req, self.replicas.values()), admission.footprint_of_new(req), req.prompt_tokens
        )
        if room and self._turns and self._owes_a_turn(now):
            return None
        replica_id = self.policy.route(req, room) if room else self._past_every_replica(req)
        if replica_id is None:
            return None
        admission.admit(req, replica_id, now)
        self._took_a_turn()
        return self._proceed(req, set(), replica_id) + self._with_workflow(req.session_id)

    def _owes_a_turn(self, now: float) -> bool:
        """With workers, asked where this worker has room for its next new workflow: another worker has new
        workflows waiting and has admitted none since this worker last did (while it waited), so the room
        is left to it (it sees the room at its next sync, ~15-30 ms), and the workers take turns. A worker
        whose calls freed the room otherwise admitted its own next workflow in the same step, every time:
        a flood owned by one worker kept another worker's tenant waiting until it stopped (12-14 s against
        0.7 s in one process). A turn is left for at most `_TURN_S` from when room was first withheld, so a
        worker whose head fits nowhere yet holds this one's back no longer."""
        last = self._turns_at_admit
        if not any(last.get(worker) == admitted for worker, admitted in self._turns.items()):
            self._owed_since = None
            return False
        if self._owed_since is None:
            self._owed_since = now
        return now - self._owed_since < _TURN_S

    def _took_a_turn(self) -> None:
        if self._turns or self._turns_at_admit:  # (one process: neither, and no copy a call)
            self._turns_at_admit = dict(self._turns)
        self._owed_since = None

    def _refuse_stranded(self) -> list[Decision]:
        """Refuse the new workflows waiting here that no healthy replica can take (every replica down,
        drained or removed, or none left serving their model): they waited for `max_wait_s`, or for ever,
        while a new call in their place got a 503 at once."""
        assert self.admission is not None
        admission = self.admission
        if not len(admission.waiting):
            return []
        healthy = [r for r in self.replicas.values() if r.healthy]
        has_candidate = self.policy.has_candidate
        stranded = [
            req for req in admission.waiting.items() if not healthy or not has_candidate(req, healthy)
        ]
        decisions: list[Decision] = []
        for req in stranded:
            admission.cancel(req.request_id)
            reason = self._no_replica() if not healthy else _NO_REPLICA_FOR_MODEL
            decisions.append(self._refuse(req, reason, 503))  # (a pending end, too)
        return decisions

    def _with_workflow(self, session_id: str) -> list[Decision]:
        """The other calls of a workflow just admitted that wait here (parallel calls sent before it was)
        go with it: calls of an admitted workflow never wait for admission."""
        assert self.admission is not None
        decisions: list[Decision] = []
        for req in self.admission.take_waiting_of(session_id):
            decisions += self._proceed(req, set(), self._place_admitted(req))
        return decisions

    def _past_every_replica(self, req: RequestInfo) -> ReplicaId | None:
        """Where a new workflow whose prompt alone is larger than the KV of every healthy replica (each
        known) goes at once: no engine can take it (vLLM refuses a prompt past its context, which is at most
        its KV) and no room would ever come; waiting, it held every workflow queued behind it until the
        holds ran out. The replica answers it (an error, as a rule). None: some replica may hold it."""
        healthy: list[ReplicaView] = []
        for r in self._for_model(req, self.replicas.values()):  # (another model's would never take it)
            if r.healthy:
                if takes_prompt(r, req.prompt_tokens):
                    return None  # (the common case: the first healthy replica answers it)
                healthy.append(r)
        return self.policy.route(req, healthy) if healthy else None

    def _admit_other_models(self, stuck_model: str, now: float) -> list[Decision]:
        """The waiting head found no room on the replicas serving its model (proxy/model_routing.py): the
        workflows of other models are not held behind it. Each model keeps its own head of line: in
        arrival order, a workflow of a model whose earlier one did not fit waits; one that fits is admitted
        (out of the fair order, so its tenant is not charged for it)."""
        assert self.admission is not None
        admission = self.admission
        stuck = {stuck_model}
        decisions: list[Decision] = []
        for req in list(admission.waiting.items()):
            if req.model in stuck:
                continue
            admitted = self._admit_one(req, now)
            if admitted is None:
                stuck.add(req.model)
                if stuck.issuperset(admission.waiting_models):
                    break
                continue
            decisions += admitted
        return decisions

    def _queue_active(self) -> bool:
        """Whether calls go through the release queue now: always, or (`min_active_tenants` > 1) while enough
        tenants sent calls recently, and as long as anything is held (no call overtakes a held one)."""
        assert self.release is not None
        spec = self.release.spec
        if spec.min_active_tenants <= 1 or len(self.release):
            return True
        self._forget_quiet_tenants()
        return len(self._tenant_seen) + self._foreign_tenants >= spec.min_active_tenants

    def _forget_quiet_tenants(self) -> None:
        assert self.release is not None
        horizon = self.clock() - self.release.spec.active_window_s
        seen = self._tenant_seen
        while seen and next(iter(seen.values())) < horizon:  # forget tenants quiet past the window
            del seen[next(iter(seen))]

    def _hold(self, req: RequestInfo, tried: set[ReplicaId], to: ReplicaId | None = None) -> list[Decision]:
        """Hold `req` in its replica's lane, then release what that replica has room for."""
        assert self.release is not None
        replica_id = to if to is not None else self._pick(req, tried)
        if isinstance(replica_id, Reject):
            return [replica_id]
        release = self.release
        limit = release.spec.max_queued
        decisions: list[Decision] = []
        # a retry (its replica failed it) was accepted already: the queue's bound is for new calls
        if not tried and release.is_full():
            pushed = release.push_out_for(req.tenant_id)  # the tenant holding the most gives up a place
            if pushed is None:
                return [self._refuse(req, f"the proxy's queue is full ({limit} calls waiting)", 429)]
            self._queued_changed(pushed.replica_id, -1)
            reason = f"the proxy's queue is full ({limit} calls waiting; this tenant held the most)"
            decisions.append(self._refuse(pushed.req, reason, 429))
        release.hold(req, replica_id, tried, self.clock(), bounded=False)
        self._queued_changed(replica_id, +1)
        return decisions + self._pump(replica_id)

    def _pump(self, replica_id: ReplicaId) -> list[Decision]:
        """Release held calls to `replica_id`, in the fair order, while its gate has room."""
        assert self.release is not None
        replica = self.replicas.get(replica_id)
        decisions: list[Decision] = []
        while replica is not None and self.release.has_room(replica):
            if self._lane_turns and replica.queued and self._owes_a_lane_turn(replica_id):
                break
            held = self.release.next_for(replica_id, self.clock())
            if held is None:
                break
            self._queued_changed(replica_id, -1)
            self._released_to[replica_id] = self._released_to.get(replica_id, 0) + 1
            turns = self._lane_turns.get(replica_id)
            self._lane_turns_at_release[replica_id] = dict(turns) if turns else _NO_TURNS
            if self._lane_owed_since:
                self._lane_owed_since.pop(replica_id, None)
            decisions.append(self._dispatch(held.req, replica_id, held.tried))
        return decisions

    def _owes_a_lane_turn(self, replica_id: ReplicaId) -> bool:
        """With workers, asked where this worker's release queue has room on `replica_id` for its next held
        call: another worker holds calls for that replica and has released none there since this worker last
        did, so the room is left to it (it sees it at its next sync), and the workers take turns. A worker
        whose call ended released its own next call in the same step, every time: a flood owned by one
        worker kept another worker's tenant from the gate until it stopped (9.6-13.2 s against 0.3-0.6 s in
        one process). A turn is left for at most `_TURN_S` from when this worker first withheld the room,
        each time (a worker that cannot take it, its event loop behind or its gate another, delays each of
        this worker's releases there by that much at most)."""
        turns = self._lane_turns.get(replica_id)
        last = self._lane_turns_at_release.get(replica_id)
        if turns and last is not None and any(w not in last for w in turns):
            # began holding calls after this worker's last release: owed a turn from its count now
            last = self._lane_turns_at_release[replica_id] = {**turns, **last}
        # (this worker having released none here: owed to nobody)
        if not turns or last is None or not any(last.get(w) == n for w, n in turns.items()):
            self._lane_owed_since.pop(replica_id, None)
            return False
        now = self.clock()
        since = self._lane_owed_since.setdefault(replica_id, now)
        return now - since < _TURN_S

    def _rehome(self, replica_id: ReplicaId) -> list[Decision]:
        """The replica is down or gone: route the calls held for it again."""
        assert self.release is not None
        moved: list[HeldCall] = self.release.drain(replica_id)
        if replica_id in self.replicas:
            self.replicas[replica_id].queued = 0
        decisions: list[Decision] = []
        for held in moved:  # (never a pinned call: those are not held)
            decisions += self._hold(held.req, held.tried)  # re-placed: the admission follows the dispatch
        return decisions

    def _queued_changed(self, replica_id: ReplicaId, delta: int) -> None:
        replica = self.replicas.get(replica_id)
        if replica is not None:
            replica.queued += delta

    def _dispatch(self, req: RequestInfo, replica_id: ReplicaId, tried: set[ReplicaId]) -> Dispatch:
        tried.add(replica_id)
        request_id, session_id = req.request_id, req.session_id  # (a Struct's fields: a lookup each)
        flight = self.in_flight[request_id] = _InFlight(req, replica_id, tried)
        view = self.replicas[replica_id]
        view.in_flight += 1
        if self.speeds is not None and not view.waiting:  # (behind an engine queue: a time of its load)
            flight.dispatched_at = self.clock()
            flight.load = view.in_flight
        session = self.sessions.get(session_id)
        if session is None:
            session = self.sessions[session_id] = _Session(last_seen=self.clock())
            self._count_session(session.tenant_id, 1)
        flight.session = session
        priority = self._priority(session)
        session.in_flight += 1
        session.calls += 1
        admission = self.admission
        spilled = False
        if self._spill and admission is not None:
            wf = admission.workflows.get(session_id)
            if wf is not None and wf.in_flight:  # beside another call of its workflow: KV of its own
                spilled = req.spilled and replica_id != wf.replica_id
                shares = self._held_shares(req, [view])  # (before the prefix hook records this call)
                tokens = _own_tokens(
                    admission.call_tokens(req), req.prompt_tokens, shares[0] if shares else 0.0
                )
                if tokens > 0:
                    flight.beside = tokens
                    admission.take_beside(replica_id, tokens)
        # a spilled call leaves its workflow bound where it was (no session affinity hook)
        for on_dispatch in self.policy.spill_hooks if spilled else self.policy.dispatch_hooks:
            on_dispatch(req, replica_id)
        holds = admission is None or admission.dispatched(req, replica_id, spilled)
        # a replica with a CPU KV tier reloads an evicted prefix over PCIe for far less than a re-prefill
        # costs, so a retention that would rather let the KV go there is not asked for one
        retention = self.policy.retention
        ttl_s = (
            None
            if retention is None
            or (self.replicas[replica_id].cpu_kv_tier and not retention.holds_with_cpu_tier)
            or not holds  # a workflow that holds no KV between calls (one-shot traffic): none kept for it
            else retention.retain_ttl_s(req, replica_id)
        )
        retain_priority = None
        if ttl_s is not None and retention is not None:
            retain_priority = retention.retain_priority(req, replica_id)
            flight.retained = True
        return Dispatch(
            request_id, replica_id, priority=priority, retain_ttl_s=ttl_s, retain_priority=retain_priority
        )

    def _priority(self, session: _Session) -> int | None:
        """vLLM's request priority (lower first; retentions rank with their call): "first-call" puts a
        workflow's later calls before new work; "workflow-age" puts every call of an older workflow before
        those of newer ones, so under KV pressure the engine preempts the newest workflows (cheap to
        recompute) and new work cannot break the KV of a workflow in flight."""
        mode = self.policy.prioritize
        if mode == "first-call":
            return 0 if session.calls or session.spawned else 1
        if mode == "workflow-age":
            # a tenant whose class has a first-token target (interactive) goes before every other workflow
            urgent = self.tenants.ttft_target_s(session.tenant_id) is not None
            seq = session.seq
            return seq - _SLO_PRIORITY_LEAD if urgent else seq
        return None

    def _session_done(self, flight: _InFlight, now: float) -> bool:
        """A dispatched call left its replica: its session counts one call fewer in flight. False when that
        session is gone (ended while the call ran), or its id names a new one now: nothing is counted."""
        session_id = flight.req.session_id
        session = self.sessions.touch(session_id)  # the table stays in last-seen order
        if session is None or session is not flight.session:
            return False
        if self._single_call:
            self._single_call.touch(session_id)
        session.in_flight -= 1
        session.last_seen = now
        return True


def _own_tokens(tokens: int, prompt_tokens: int, held_share: float) -> int:
    """The KV a call of `tokens` (`call_tokens`) takes of its own on a replica holding `held_share` of its
    prompt: calls of one session in parallel share their prefix there (vLLM's prefix caching keeps one copy),
    and counted whole, 8 calls over a 12k-token prefix were spilled half away from a replica with 73% of its
    KV free, each recomputing the prefix elsewhere (fan-outs 1.3-2x slower: a review)."""
    return tokens - int(prompt_tokens * min(1.0, held_share))


def _pin_lost(req: RequestInfo, what: str, status: int = 503) -> Reject:
    return Reject(
        req.request_id,
        f"replica {req.pinned_replica}, the only one holding what this call continues, {what}",
        status,
    )
