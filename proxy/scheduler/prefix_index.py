"""An approximate view of which replica caches which prompt prefix, built from the calls the router sent.

Contract: `insert(hashes, replica)` records that `replica` now holds the prefix chain `hashes` (the
`RequestInfo.prefix_hashes` of a call routed there); `matches(hashes)` returns, for every replica holding at
least the first chunk, how many leading chunks of `hashes` it holds. Each replica keeps at most
`capacity_per_replica` chunks, evicting the least recently inserted or matched first — a stand-in for the
replica's own LRU prefix cache, which the router cannot see. Memory is bounded by replicas x capacity.

Kept as an inverted index (chunk hash -> the replicas holding it, as a bit mask over the replicas), so a
match walks the chain once, intersecting masks, and notes each replica where it drops out: cheap with 64
replicas and prompts of hundreds of chunks, and no set object per chunk for the garbage collector to walk.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from proxy.scheduler.types import ReplicaId, ReplicaView


class PrefixIndex:
    def __init__(self, capacity_per_replica: int) -> None:
        if capacity_per_replica <= 0:
            raise ValueError("capacity_per_replica must be positive")
        self.capacity_per_replica = capacity_per_replica
        self._holders: dict[int, int] = {}  # chunk hash -> mask of the replicas' bits
        self._lru: dict[ReplicaId, OrderedDict[int, None]] = {}
        self._bit: dict[ReplicaId, int] = {}  # replica -> its bit (kept if it is forgotten: it may return)
        self._replicas: list[ReplicaId] = []  # bit position -> replica

    def matches(self, hashes: Sequence[int]) -> dict[ReplicaId, int]:
        """Leading chunks of `hashes` held, per replica that holds at least one."""
        matched: dict[ReplicaId, int] = {}
        holders = self._holders
        alive = 0  # the replicas holding every chunk so far
        depth = 0
        for h in hashes:
            now = holders.get(h, 0)
            if depth:
                now &= alive
                if now != alive:  # these held `depth` leading chunks, not the next one
                    self._note(alive & ~now, depth, matched)
            if not now:
                return matched
            alive = now
            depth += 1
        self._note(alive, depth, matched)
        return matched

    def depths(self, hashes: Sequence[int], replicas: Sequence[ReplicaView]) -> list[int]:
        """`matches(hashes).get(r.replica_id, 0)` for each of `replicas`, in their order, without the mapping:
        the chain is walked once as `matches` walks it, keeping where sets of replicas drop out (a few
        masks), and each candidate looks its bit up in them (a prompt whose shared prefix every replica holds
        no longer makes a dict entry per replica on every new workflow)."""
        drops: list[tuple[int, int]] = []  # (replicas holding exactly `depth` leading chunks, depth)
        holders = self._holders
        alive = 0  # the replicas holding every chunk so far (`depth` of them)
        for depth, h in enumerate(hashes):
            now = holders.get(h, 0)
            if depth:
                now &= alive
                if now != alive:
                    drops.append((alive & ~now, depth))
            if not now:
                break
            alive = now
        else:
            if alive:
                drops.append((alive, len(hashes)))
        out = [0] * len(replicas)
        if not drops:
            return out
        bits = self._bit
        for i, r in enumerate(replicas):
            bit = bits.get(r.replica_id, 0)
            if bit:
                for mask, held in drops:
                    if mask & bit:
                        out[i] = held
                        break
        return out

    def _note(self, mask: int, depth: int, matched: dict[ReplicaId, int]) -> None:
        replicas = self._replicas
        while mask:
            low = mask & -mask
            matched[replicas[low.bit_length() - 1]] = depth
            mask ^= low

    def insert(self, hashes: Sequence[int], replica: ReplicaId) -> None:
        bit = self._bit.get(replica)
        if bit is None:
            bit = self._bit[replica] = 1 << len(self._replicas)
            self._replicas.append(replica)
        lru = self._lru.get(replica)
        if lru is None:  # (not setdefault: no OrderedDict made and dropped on every call)
            lru = self._lru[replica] = OrderedDict()
        holders, move_to_end = self._holders, lru.move_to_end
        for h in hashes:
            if h in lru:
                move_to_end(h)
            else:
                lru[h] = None
                holders[h] = holders.get(h, 0) | bit
        while len(lru) > self.capacity_per_replica:
            old, _ = lru.popitem(last=False)
            self._drop(old, bit)

    def size(self, replica: ReplicaId) -> int:
        """Chunks the index believes `replica` holds."""
        lru = self._lru.get(replica)
        return len(lru) if lru is not None else 0

    def forget_replica(self, replica: ReplicaId) -> None:
        bit = self._bit.get(replica, 0)
        for h in self._lru.pop(replica, OrderedDict()):
            self._drop(h, bit)

    def _drop(self, h: int, bit: int) -> None:
        left = self._holders[h] & ~bit
        if left:
            self._holders[h] = left
        else:
            del self._holders[h]
