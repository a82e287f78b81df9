"""The routing framework: filters, then weighted scorers, then a picker.

A routing decision narrows the healthy replicas with filters, sums each scorer's values times its weight, and
lets the picker choose among the candidates. Plugins are small, pure and stateless except through the hooks,
which the core calls after a call is dispatched and after it finishes (no-op by default).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

from mypy_extensions import mypyc_attr

# re-exported: plugins import it from here
from proxy.scheduler.plugin_params import PluginParams as PluginParams
from proxy.scheduler.scoring import add_weighted
from proxy.scheduler.types import ReplicaId, ReplicaView, RequestInfo, Usage

if TYPE_CHECKING:
    from proxy.scheduler.admission import AdmissionSpec
    from proxy.scheduler.release import ReleaseQueueSpec
    from proxy.scheduler.stealing import StealingSpec


# compiled (setup.py); users' plugins and the tests subclass it
@mypyc_attr(allow_interpreted_subclasses=True)
class Plugin:
    """Base of every plugin: a kebab-case `type_name`, a msgspec `Params` struct and no-op hooks.

    Every plugin is built as `cls(params, rng)`; randomised plugins draw only from `rng`, so one seed makes a
    whole run repeatable.
    """

    type_name: ClassVar[str]
    Params: ClassVar[type[PluginParams]] = PluginParams
    # Whether the plugin reads `RequestInfo.prefix_hashes` (the shell computes them only when one does).
    uses_prefix_hashes: ClassVar[bool] = False
    # Whether `on_dispatch` binds the call's session to the replica (session affinity): not called for a
    # call spilled beside its workflow (`RequestInfo.spilled`), whose workflow stays where it was.
    binds_sessions: ClassVar[bool] = False

    def __init__(self, params: PluginParams, rng: random.Random) -> None:
        self.params = params
        self.rng = rng

    def on_dispatch(self, req: RequestInfo, replica_id: ReplicaId) -> None:
        """Called once the core has sent `req` to `replica_id`."""

    def on_finish(self, req: RequestInfo, replica_id: ReplicaId, usage: Usage) -> None:
        """Called when `req` has finished on `replica_id` (successfully or not)."""

    def on_session_end(self, session_id: str) -> None:
        """Called when the core forgets a session (idle too long): drop any per-session state."""


@mypyc_attr(allow_interpreted_subclasses=True)
class Filter(Plugin):
    """Narrows candidates. Contract: returns a subset of `replicas` in their order; may return empty."""

    def filter(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> Sequence[ReplicaView]:
        raise NotImplementedError


@mypyc_attr(allow_interpreted_subclasses=True)
class Scorer(Plugin):
    """Scores candidates. Contract: one value in [0, 1] per candidate, higher is better; no I/O.

    Called with an empty sequence it returns an empty mapping. A scorer implements `score`, or `score_each`
    (the values as a list in the candidates' order: what `route` reads, with no dict per call) and derives
    `score` from it with `by_replica`; both must give the same values.
    """

    def score(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> Mapping[ReplicaId, float]:
        raise NotImplementedError

    def score_each(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> Sequence[float]:
        """The scores in the order of `replicas` (a candidate `score` leaves out scores 0)."""
        scores = self.score(req, replicas)
        return [scores.get(r.replica_id, 0.0) for r in replicas]


def by_replica(replicas: Sequence[ReplicaView], values: Sequence[float]) -> dict[ReplicaId, float]:
    """`score_each`'s values keyed by replica id (a scorer's `score` from its `score_each`)."""
    return {r.replica_id: value for r, value in zip(replicas, values, strict=True)}


@mypyc_attr(allow_interpreted_subclasses=True)
class Picker(Plugin):
    """Chooses one replica. Contract: `replicas` is non-empty; returns the id of one of them.

    `scores` holds the weighted sum of all scorers for each candidate (0 for all when there are no scorers).
    A picker that returns a lone candidate without drawing or keeping any state sets `takes_lone_candidate`:
    `route` then skips the scorers (pure, by their contract) when one candidate is left.
    """

    takes_lone_candidate: ClassVar[bool] = False

    def pick(
        self, req: RequestInfo, replicas: Sequence[ReplicaView], scores: Mapping[ReplicaId, float]
    ) -> ReplicaId:
        raise NotImplementedError

    def pick_each(
        self, req: RequestInfo, replicas: Sequence[ReplicaView], scores: Sequence[float]
    ) -> ReplicaId:
        """`pick` with the scores in the order of `replicas` (what `route` calls); pickers may override it to
        skip building the mapping, choosing exactly as `pick` would."""
        return self.pick(req, replicas, by_replica(replicas, scores))


@mypyc_attr(allow_interpreted_subclasses=True)
class Retention(Plugin):
    """Decides KV retention after a call. Contract: returns the seconds the replica should keep the call's KV
    cached after it ends (the retention contract, docs/retention-api.md), or None for no retention.
    `holds_with_cpu_tier` False: on a replica with a CPU KV tier the core asks for no retention (the prefix
    goes to the CPU tier when evicted and is reloaded from there) and does not call `retain_ttl_s`."""

    holds_with_cpu_tier = True

    def retain_ttl_s(self, req: RequestInfo, replica_id: ReplicaId) -> float | None:
        raise NotImplementedError

    def retain_priority(self, req: RequestInfo, replica_id: ReplicaId) -> int | None:
        """The retention's priority (lower = more important); None: the call's own priority."""
        return None

    def release_after(self, req: RequestInfo, replica_id: ReplicaId, usage: Usage) -> bool:
        """Asked when a call that asked for a retention has finished (its answer seen and learned from):
        True to release that retention now instead of at its TTL (the answer says the session went quiet:
        a person reading, the task ending). Default: keep it to its TTL."""
        return False


@mypyc_attr(allow_interpreted_subclasses=True)
class Gate(Plugin):
    """Decides when a replica takes the next call held in the proxy's release queue. Contract: pure, reads
    only the replica's view; the workflow-atomic scheduler replaces it with admission by KV working set."""

    def has_room(self, replica: ReplicaView) -> bool:
        raise NotImplementedError


class RoutingPolicy:
    """A configured chain of plugins. `route` is pure apart from the plugins' own state."""

    def __init__(
        self,
        name: str,
        filters: Sequence[Filter],
        scorers: Sequence[tuple[Scorer, float]],
        picker: Picker,
        retention: Retention | None = None,
    ) -> None:
        self.name = name
        self.filters = list(filters)
        self.scorers = list(scorers)
        self._weighted = [(scorer, weight) for scorer, weight in self.scorers if weight != 0]
        self.picker = picker
        self.retention = retention
        extra = [retention] if retention is not None else []
        # Fixed at build time: the core calls the hooks of every plugin on every call.
        self.plugins: list[Plugin] = [*self.filters, *(s for s, _ in self.scorers), picker, *extra]
        # The dispatch hooks some plugin implements (the core calls them on every call: no call to a no-op).
        self.dispatch_hooks = [p.on_dispatch for p in self.plugins if _overrides(p, "on_dispatch")]
        self.spill_hooks = [
            p.on_dispatch for p in self.plugins if _overrides(p, "on_dispatch") and not p.binds_sessions
        ]
        self.finish_hooks = [p.on_finish for p in self.plugins if _overrides(p, "on_finish")]
        self.session_end_hooks = [p.on_session_end for p in self.plugins if _overrides(p, "on_session_end")]
        self.wants_prefix_hashes = any(p.uses_prefix_hashes for p in self.plugins)
        # Workflow scheduling, set by build_policy from the spec (None / False: plain routing).
        self.admission: AdmissionSpec | None = None
        self.queue: ReleaseQueueSpec | None = None
        self.prioritize = "off"
        self.stealing: StealingSpec | None = None
        # Whether a session's bound replica always wins when it is a candidate: a max-score picker and a
        # session-affinity scorer whose weight exceeds all other weights together (scores are in [0, 1]).
        self.affinity_decides = picker.type_name == "max-score-picker" and any(
            scorer.type_name == "session-affinity-scorer"
            and weight > sum(w for other, w in self.scorers if other is not scorer)
            for scorer, weight in self.scorers
        )

    def retain_ttl_s(self, req: RequestInfo, replica_id: ReplicaId) -> float | None:
        return self.retention.retain_ttl_s(req, replica_id) if self.retention is not None else None

    def retain_priority(self, req: RequestInfo, replica_id: ReplicaId) -> int | None:
        return self.retention.retain_priority(req, replica_id) if self.retention is not None else None

    def release_after(self, req: RequestInfo, replica_id: ReplicaId, usage: Usage) -> bool:
        return self.retention is not None and self.retention.release_after(req, replica_id, usage)

    def candidates(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> Sequence[ReplicaView]:
        """The `replicas` the filters leave `req` (those `route` scores; empty: none)."""
        candidates: Sequence[ReplicaView] = replicas
        for f in self.filters:
            candidates = f.filter(req, candidates)
            if not candidates:
                break
        return candidates

    def has_candidate(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> bool:
        return bool(self.candidates(req, replicas))

    def route(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> ReplicaId | None:
        """The replica for `req`, or None when no candidate is left."""
        candidates = replicas
        if self.filters:
            candidates = self.candidates(req, replicas)
            if not candidates:
                return None
        if self.picker.takes_lone_candidate and len(candidates) == 1:
            return candidates[0].replica_id  # what the picker would answer, whatever the scores
        # One list per scorer, aligned with the candidates and summed in the scorers' order (the same floats
        # as a per-replica sum; compiled: scoring.py); a scorer of weight 0 adds nothing and is not asked.
        totals = [0.0] * len(candidates)
        for scorer, weight in self._weighted:
            add_weighted(totals, weight, scorer.score_each(req, candidates))
        return self.picker.pick_each(req, candidates, totals)


def _overrides(plugin: Plugin, hook: str) -> bool:
    return getattr(type(plugin), hook) is not getattr(Plugin, hook)
