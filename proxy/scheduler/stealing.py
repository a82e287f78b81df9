"""Work stealing: an idle replica takes a bound workflow whose own replica makes its next call wait.

Contract (pure; the core asks on each call of an admitted workflow, before routing it):
- The call's bound replica is *congested* when its engine already has calls waiting (`waiting`, as last
  scraped) or the proxy holds calls for it (`queued`), and the predicted wait there exceeds the cost of
  recomputing the call's prompt elsewhere: wait = backlog x `call_s` / max(1, running); recompute =
  prompt_tokens x `prefill_s_per_token` x (1 + prompt_tokens / `attention_tokens`) (prefill grows faster
  than linearly with the context: the attention term). When the replica's KV events say how much of the
  context it still caches (`RequestInfo.kv_resident`), what staying saves is recompute(prompt) less
  recompute(the part it evicted): a workflow whose KV is gone from its replica moves for any wait.
- Another healthy replica is *idle* when nothing of this proxy is in flight or held there, its engine
  has nothing waiting, and it has room for the workflow's footprint (`has_room`).
- Then the call moves to the idle replica with the fewest running calls (ties: first in the core's
  order) that is not slower than the bound one (`slowness`, below), the workflow re-binds there (its prefix
  now lives there) and the move is counted.
- Rebalancing (`rebalance_above` = f, off when None), asked first: when the bound replica has a backlog and
  the reservations of its live workflows exceed f x its KV capacity (admitted workflows grew past what it
  holds: under priorities the newest of them would keep losing their KV there), the call moves to the healthy
  replica without a backlog that has the most KV left under f x its capacity after taking the workflow's
  footprint, idle or not; none fits: no rebalancing move.
- Speed (`speed_target`, asked first, only where the bound replica's `slowness` is past 1.0: replicas of
  different speed, replica_speed.py): the call moves to the replica, at least `slower_above` times faster,
  whose load after taking it, (1 + in_flight + queued + waiting) x slowness, is the lowest and below the
  bound replica's with the call, whose reserved KV with the workflow's footprint, x slowness, is below the
  bound replica's (where that reserves any: the workflows bound there, not only those with a call in
  flight), and that has room for the workflow. A move goes only to a faster replica,
  never back (the fastest has slowness 1.0), so no workflow moves to and fro; the weighted count leaves the
  slower replicas the share of the work their speed serves as fast. Without it a workflow stayed where it
  first went: with one replica three times slower, half of a burst's agents ran there to the end.
- Spill (`spill_target`, `spill`): a call that comes while another call of its workflow runs, and whose
  bound replica has no KV room for it or makes it wait (the core's `_spill_target` says when), goes to a
  healthy replica that takes its prompt: one with room for it and no backlog (nothing waiting in its
  engine, nothing held for it), one holding `SPILL_CACHED_SHARE` of its prompt first (the prefix index),
  then the least loaded by (1 + in_flight + queued) x slowness. Where none has room: the least loaded
  replica with the call, the bound one included, or one loaded at most one call more that holds the
  prompt (the bound replica on a tie: it stays). So calls of one session spread by their calls in flight
  once every replica has a backlog (leaving out replicas with a backlog sent one app's calls under one key
  all to one replica again, until the other had drained to idle). The workflow stays bound (its next call
  alone goes back), nothing is retained for the call where it went, and the spill is counted (`spills`).
  Moving the whole workflow instead (as stealing does) took every later call with it, so the calls of one
  session in parallel went on sharing one replica, now the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from proxy.scheduler.specs import StealingSpec as StealingSpec  # re-exported: its home before
from proxy.scheduler.types import ReplicaId, ReplicaView, RequestInfo

# A replica with room that holds at least this share of a spilled call's prompt takes it before a less
# loaded one (the prefix index's figure): a fan-out's calls share their session's prefix, and go on where
# the first spilled call took it rather than to the least loaded replica of the moment.
SPILL_CACHED_SHARE = 0.5


def recompute_s(spec: StealingSpec, prompt_tokens: int) -> float:
    return prompt_tokens * spec.prefill_s_per_token * (1.0 + prompt_tokens / spec.attention_tokens)


def steal_target(
    spec: StealingSpec,
    req: RequestInfo,
    bound: ReplicaView,
    replicas: Iterable[ReplicaView],
    has_room: Callable[[ReplicaView], bool],
    footprint: int = 0,
) -> ReplicaId | None:
    """The replica `req` should move to from `bound` (rebalancing, else an idle one), or None to stay."""
    if spec.rebalance_above is not None:
        to = _rebalance_target(spec.rebalance_above, bound, replicas, footprint)
        if to is not None:
            return to
    backlog = bound.waiting + bound.queued
    if not bound.healthy or backlog == 0:
        return None
    prompt = req.prompt_tokens
    saved = recompute_s(spec, prompt)
    if req.kv_resident is not None:
        held = req.kv_resident.get(bound.replica_id)
        if held is not None and held < prompt:
            saved -= recompute_s(spec, prompt - held)
    if backlog * spec.call_s / max(1, bound.running) <= saved:
        return None
    best: ReplicaView | None = None
    slowness = bound.slowness
    for r in replicas:
        # the rarest-true conditions first (most replicas have calls in flight); has_room last: it costs most
        if r.in_flight or r.waiting or r.queued or r is bound or not r.healthy or not has_room(r):
            continue
        if r.slowness > slowness:  # slower: the speed move would take the workflow back at its next call
            continue
        if best is None or r.running < best.running:
            best = r
    return best.replica_id if best is not None else None


def speed_target(
    bound: ReplicaView,
    replicas: Iterable[ReplicaView],
    has_room: Callable[[ReplicaView], bool],
    slower_above: float,
    footprint: int = 0,
) -> ReplicaId | None:
    """The faster replica a call of a workflow bound to the slower `bound` should move to, or None."""
    slowness = bound.slowness
    if slowness <= 1.0 or not bound.healthy:
        return None
    best: ReplicaView | None = None
    best_load = (1.0 + bound.in_flight + bound.queued + bound.waiting) * slowness
    # the workflows bound there, between calls too (calls in flight miss those in a tool call: counting
    # them alone piled 80% of the calls onto a replica 1.45 times faster, and task times went up 7%)
    reserved = bound.reserved_tokens * slowness
    for r in replicas:
        if r is bound or not r.healthy or r.slowness * slower_above > slowness:
            continue
        load = (1.0 + r.in_flight + r.queued + r.waiting) * r.slowness
        if load >= best_load or (reserved and (r.reserved_tokens + footprint) * r.slowness >= reserved):
            continue
        if has_room(r):
            best, best_load = r, load
    return best.replica_id if best is not None else None


def spill_target(
    bound: ReplicaView,
    replicas: Sequence[ReplicaView],
    fits: Callable[[ReplicaView], bool],
    prompt_tokens: int,
    cached: Sequence[float] = (),
) -> ReplicaId | None:
    """The replica a call beside another of its workflow spills to from `bound`, or None to stay.
    `replicas`: those it may go to, `bound` among them; `cached`: the share of the call's prompt each of
    them holds (the prefix index's), if known."""
    room: ReplicaView | None = None
    room_key: tuple[bool, float] = (False, 0.0)
    loads: list[tuple[float, bool, ReplicaView]] = []
    for i, r in enumerate(replicas):
        if not r.healthy:
            continue
        capacity = r.kv_capacity_tokens
        if 0 < capacity < prompt_tokens:  # past its context: it would refuse the call
            continue
        holds = bool(cached) and cached[i] >= SPILL_CACHED_SHARE
        load = (1.0 + r.in_flight + r.queued) * r.slowness
        loads.append((load, holds, r))
        if r is not bound and not r.waiting and not r.queued and fits(r):
            key = (holds, -load)
            if room is None or key > room_key:
                room, room_key = r, key
    if room is not None:
        return room.replica_id
    if not loads:
        return None
    # none has room: the least loaded with the call, or one within a call of it that holds the prompt (the
    # bound replica on a tie)
    least = min(load for load, _, _ in loads)
    best: ReplicaView | None = None
    best_rank: tuple[bool, float, bool] = (False, 0.0, False)
    for load, holds, r in loads:
        if load <= least + 1.0:
            rank = (holds, -load, r is bound)
            if best is None or rank > best_rank:
                best, best_rank = r, rank
    return None if best is None or best is bound else best.replica_id


def _rebalance_target(
    above: float, bound: ReplicaView, replicas: Iterable[ReplicaView], footprint: int
) -> ReplicaId | None:
    cap = bound.kv_capacity_tokens
    if (
        not bound.healthy
        or cap <= 0
        or bound.reserved_tokens <= cap * above
        or not (bound.waiting or bound.queued)
    ):
        return None
    best: ReplicaView | None = None
    best_free = 0.0
    for r in replicas:
        if r is bound or not r.healthy or r.queued or r.waiting or r.kv_capacity_tokens <= 0:
            continue
        free = r.kv_capacity_tokens * above - r.reserved_tokens - footprint
        if free >= 0 and (best is None or free > best_free):
            best, best_free = r, free
    return best.replica_id if best is not None else None
