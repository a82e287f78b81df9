"""The sans-IO scheduler core: events in, decisions out.

The core never awaits and never touches a socket. The I/O shell (the aiohttp proxy, or the discrete-event
cluster) reports what happened — a call arrived, its first token came back, it finished, a replica's health
or load changed, time passed — and carries out the decisions each call returns. Time comes only from the
injected clock, so the same core runs on the wall clock in production and on a virtual clock in simulation.

Every event method returns a list of decisions, even when it is usually empty: a later admission queue will
dispatch waiting calls from `request_finished` or `tick`, and the shell must already carry those out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from predictor import Predictor
from proxy.scheduler.framework import RoutingPolicy
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


class _InFlight(msgspec.Struct):
    req: RequestInfo
    replica_id: ReplicaId
    tried: set[ReplicaId]
    first_token_at: float | None = None


class _Session(msgspec.Struct):
    last_seen: float
    in_flight: int = 0
    calls: int = 0


class SchedulerCore:
    """Routes calls with a `RoutingPolicy` and keeps the replica and session datastore.

    Contract: each call that arrives gets exactly one final outcome — a `Dispatch` (possibly after failed
    attempts re-dispatched elsewhere by `dispatch_failed`) or a `Reject`; `request_finished` must then be
    reported exactly once for every dispatched call. Sessions idle longer than `session_idle_ttl_s` with no
    call in flight are forgotten on `tick`, so memory stays bounded by the live sessions.
    """

    def __init__(
        self,
        replicas: Iterable[ReplicaId],
        policy: RoutingPolicy,
        clock: Callable[[], float],
        *,
        session_idle_ttl_s: float = 3600.0,
        predictor: Predictor | None = None,
    ) -> None:
        self.policy = policy
        # Agent Execution Graphs, learned from every call this core sees (predictor/).
        self.predictor = predictor if predictor is not None else Predictor()
        for plugin in policy.plugins:  # plugins that predict (e.g. predicted-ttl-retention) read its graphs
            bind = getattr(plugin, "bind_predictor", None)
            if bind is not None:
                bind(self.predictor)
        self.clock = clock
        self.session_idle_ttl_s = session_idle_ttl_s
        self.replicas: dict[ReplicaId, ReplicaView] = {r: ReplicaView(r) for r in replicas}
        self.in_flight: dict[str, _InFlight] = {}
        self.sessions: dict[str, _Session] = {}

    # -- events ---------------------------------------------------------------------------------------

    def request_arrived(self, req: RequestInfo) -> list[Decision]:
        if req.request_id in self.in_flight:
            raise ValueError(f"request id {req.request_id!r} is already in flight")
        self.sessions.setdefault(req.session_id, _Session(last_seen=self.clock())).last_seen = self.clock()
        self.predictor.call_arrived(
            req.session_id, req.agent_type, self.clock(), req.prompt_tokens, req.tool_names
        )
        decision = self._route(req, tried=set())
        if isinstance(decision, Reject):
            self.predictor.call_failed(req.session_id)
        return [decision]

    def first_token(self, request_id: str) -> list[Decision]:
        flight = self.in_flight.get(request_id)
        if flight is not None and flight.first_token_at is None:
            flight.first_token_at = self.clock()
        return []

    def dispatch_failed(self, request_id: str) -> list[Decision]:
        """The replica could not be reached before any response byte: mark it down and try another."""
        flight = self.in_flight.pop(request_id, None)
        if flight is None:
            return []
        replica = self.replicas.get(flight.replica_id)
        if replica is not None:
            replica.in_flight -= 1
            replica.healthy = False
        self._session_done(flight.req)
        decision = self._route(flight.req, tried=flight.tried)
        if isinstance(decision, Reject):
            self.predictor.call_failed(flight.req.session_id)
        return [decision]

    def request_finished(self, request_id: str, usage: Usage | None = None) -> list[Decision]:
        flight = self.in_flight.pop(request_id, None)
        if flight is None:
            return []
        replica = self.replicas.get(flight.replica_id)
        if replica is not None:
            replica.in_flight -= 1
        self._session_done(flight.req)
        usage = usage or Usage()
        self.predictor.call_finished(
            flight.req.session_id,
            self.clock(),
            usage.prompt_tokens or flight.req.prompt_tokens,
            usage.completion_tokens,
            usage.finish_reason,
            usage.tool_names,
        )
        for plugin in self.policy.plugins:
            plugin.on_finish(flight.req, flight.replica_id, usage)
        return []

    def replica_stats(self, stats: ReplicaStats) -> list[Decision]:
        replica = self.replicas.get(stats.replica_id)
        if replica is None:
            return []
        for field in ("healthy", "waiting", "running", "kv_usage"):
            value = getattr(stats, field)
            if value is not None:
                setattr(replica, field, value)
        return []

    def tick(self) -> list[Decision]:
        """Housekeeping: forget idle sessions; the predictor ends sessions silent past its horizon."""
        self.predictor.tick(self.clock())
        horizon = self.clock() - self.session_idle_ttl_s
        idle = [sid for sid, s in self.sessions.items() if s.in_flight == 0 and s.last_seen < horizon]
        for sid in idle:
            del self.sessions[sid]
            self.predictor.forget(sid)
            for plugin in self.policy.plugins:
                plugin.on_session_end(sid)
        return []

    # -- replica set ----------------------------------------------------------------------------------

    def add_replica(self, replica_id: ReplicaId) -> None:
        self.replicas.setdefault(replica_id, ReplicaView(replica_id))

    def remove_replica(self, replica_id: ReplicaId) -> None:
        """Stop routing to a replica; calls already on it still finish and are accounted for."""
        self.replicas.pop(replica_id, None)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view of the datastore for the admin API and logs."""
        return {
            "policy": self.policy.name,
            "replicas": [msgspec.to_builtins(r) for r in self.replicas.values()],
            "in_flight": len(self.in_flight),
            "sessions": len(self.sessions),
        }

    # -- internals ------------------------------------------------------------------------------------

    def _route(self, req: RequestInfo, tried: set[ReplicaId]) -> Decision:
        candidates = [r for r in self.replicas.values() if r.healthy and r.replica_id not in tried]
        replica_id = self.policy.route(req, candidates) if candidates else None
        if replica_id is None:
            reason = "no healthy replica" if not tried else "every healthy replica failed this request"
            return Reject(req.request_id, reason, status=503)
        tried.add(replica_id)
        self.in_flight[req.request_id] = _InFlight(req, replica_id, tried)
        self.replicas[replica_id].in_flight += 1
        session = self.sessions.setdefault(req.session_id, _Session(last_seen=self.clock()))
        session.in_flight += 1
        session.calls += 1
        for plugin in self.policy.plugins:
            plugin.on_dispatch(req, replica_id)
        return Dispatch(req.request_id, replica_id, retain_ttl_s=self.policy.retain_ttl_s(req, replica_id))

    def _session_done(self, req: RequestInfo) -> None:
        session = self.sessions.get(req.session_id)
        if session is not None:
            session.in_flight -= 1
            session.last_seen = self.clock()
