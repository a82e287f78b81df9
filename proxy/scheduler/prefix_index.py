"""An approximate view of which replica caches which prompt prefix, built from the calls the router sent.

Contract: `insert(hashes, replica)` records that `replica` now holds the prefix chain `hashes` (the
`RequestInfo.prefix_hashes` of a call routed there); `matches(hashes)` returns, for every replica holding at
least the first chunk, how many leading chunks of `hashes` it holds. Each replica keeps at most
`capacity_per_replica` chunks, evicting the least recently inserted or matched first — a stand-in for the
replica's own LRU prefix cache, which the router cannot see. Memory is bounded by replicas x capacity.

Kept as an inverted index (chunk hash -> replicas), so a match walks the chain once and touches only the
replicas that share it: cheap with 64 replicas and prompts of hundreds of chunks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from proxy.scheduler.types import ReplicaId


class PrefixIndex:
    def __init__(self, capacity_per_replica: int) -> None:
        if capacity_per_replica <= 0:
            raise ValueError("capacity_per_replica must be positive")
        self.capacity_per_replica = capacity_per_replica
        self._holders: dict[int, set[ReplicaId]] = {}
        self._lru: dict[ReplicaId, OrderedDict[int, None]] = {}

    def matches(self, hashes: Sequence[int]) -> dict[ReplicaId, int]:
        """Leading chunks of `hashes` held, per replica that holds at least one."""
        matched: dict[ReplicaId, int] = {}
        alive: set[ReplicaId] | None = None
        for k, h in enumerate(hashes):
            holders = self._holders.get(h)
            if not holders:
                break
            alive = set(holders) if alive is None else alive & holders
            if not alive:
                break
            for replica in alive:
                matched[replica] = k + 1
        return matched

    def insert(self, hashes: Sequence[int], replica: ReplicaId) -> None:
        lru = self._lru.setdefault(replica, OrderedDict())
        for h in hashes:
            if h in lru:
                lru.move_to_end(h)
            else:
                lru[h] = None
                self._holders.setdefault(h, set()).add(replica)
        while len(lru) > self.capacity_per_replica:
            old, _ = lru.popitem(last=False)
            holders = self._holders[old]
            holders.discard(replica)
            if not holders:
                del self._holders[old]

    def size(self, replica: ReplicaId) -> int:
        """Chunks the index believes `replica` holds."""
        lru = self._lru.get(replica)
        return len(lru) if lru is not None else 0

    def forget_replica(self, replica: ReplicaId) -> None:
        for h in self._lru.pop(replica, OrderedDict()):
            holders = self._holders[h]
            holders.discard(replica)
            if not holders:
                del self._holders[h]
