"""Session tables that split over shards once they are large, so that no dict of the process holds ~100,000
keys.

Why: CPython grows a dict, and compacts one that keys churn through, by rebuilding it whole in one step, and
an `OrderedDict` then rebuilds its index too (a hash lookup per key): 4.4-4.9 ms for a dict of 100,000
keys and 7.6-7.7 ms for an `OrderedDict` on this machine (docs/results/overhead-s34/lru_tables.py). Under a
flood of one-call sessions the proxy's seven session tables (the core's two, the predictor's three, the
admission's and session affinity's) hold the same keys, so they reached their rebuilds within the same call:
54-57 ms at worst (docs/results/overhead-s35/table_stalls.py; docs/results/overhead.md, thirty-fifth
session). Split over `SHARDS` shards each rebuild is a sixteenth of
that, and `salt` gives each table its own function of a key (`_shard_of`), so the shards of different
tables fill, and rebuild, at different times. A table is one dict until it holds `SPLIT_AT` keys (its
rebuilds are short below that) and stays split after: a small table, as most of the predictor's groups and
every table of a fleet of a few thousand agents are, costs what a dict does, and a split one a little more
an operation (finding the shard). `start_up`: a table made as the process starts allocates its (empty)
shards then, so that `saga serve`'s freeze of the start-up heap (proxy/server.py) takes them out of the
cyclic GC's full collections as it does the whole table (shards made at the split would be scanned, up to
700,000 entries of the seven tables each time).

Contract:
- `ShardedDict` answers as a dict does for `get`, `[]`, `in`, `len`, `pop`, assignment, `values` and `items`;
  its iteration order once split is shard by shard (deterministic, but not the order keys came in).
- `ShardedLru` answers as an `OrderedDict` does for the same, plus `move_to_end`, `touch` (`get` and
  `move_to_end` in one), `set_newest` (assignment and `move_to_end` in one) and `pop_oldest` (its
  `popitem(last=False)`); while whole, its iteration, `oldest`
  and `pop_oldest` are exactly the `OrderedDict`'s (oldest first; a key assigned again keeps its place,
  `move_to_end` and a new key go last), which is all the DES ever sees (its tables stay below `SPLIT_AT`).
  Once split, each shard (`parts`) is in the `OrderedDict`'s order, and iteration goes shard by shard: a
  caller that reads a head "up to the first entry still fresh" reads each part so. `pop_oldest` and
  `parts_in_turn` take the shards in turn: each shard holds a uniform sample of the keys in their order,
  so its head is on average about the sixteenth oldest key of the table: LRU in all but the exact pick.
  Changing a table while iterating it is an error, as for a dict.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar, cast

from mypy_extensions import i64

V = TypeVar("V")

SHARDS = 16
SPLIT_AT = 4096  # keys: a dict this size rebuilds in ~0.2 ms
_MASK = SHARDS - 1


def _shift(salt: int) -> i64:
    return 8 + 2 * (salt % 15)  # the bits of `_shard_of`'s product a table reads: its own function of a key


def _shard_of(key: str, shift: i64) -> i64:
    """The key's shard: a multiplicative hash of its last two characters and its length. Not `hash()`: a
    str's hash differs between processes, and so would the order a split table iterates in, which a DES
    run must not depend on; the last characters are where ids vary (a counter, a random suffix); ids that
    all end alike land in few shards, which costs a rebuild as long as one table's, never more."""
    n: i64 = len(key)
    if n >= 2:
        h: i64 = ord(key[n - 1]) * 31 + ord(key[n - 2]) + n * 961
    else:
        h = ord(key[0]) if n else 0
    return ((h * 2654435761) >> shift) & _MASK


class ShardedDict(Generic[V]):
    """A dict of str keys, split over shards once large; see the module contract."""

    def __init__(self, salt: int = 0, split_at: int = SPLIT_AT, *, start_up: bool = False) -> None:
        self._shift = _shift(salt)
        self._split_at = split_at
        self._whole: dict[str, V] | None = self._new_part()  # None once split
        self._shards: list[dict[str, V]] = [self._new_part() for _ in range(SHARDS)] if start_up else []
        self._len = 0  # once split

    def _new_part(self) -> dict[str, V]:
        return {}

    def _shard(self, key: str) -> dict[str, V]:
        return self._shards[_shard_of(key, self._shift)]

    def get(self, key: str) -> V | None:
        whole = self._whole
        return whole.get(key) if whole is not None else self._shard(key).get(key)

    def __getitem__(self, key: str) -> V:
        whole = self._whole
        return whole[key] if whole is not None else self._shard(key)[key]

    def __contains__(self, key: str) -> bool:
        whole = self._whole
        return key in whole if whole is not None else key in self._shard(key)

    def __setitem__(self, key: str, value: V) -> None:
        whole = self._whole
        if whole is not None:
            whole[key] = value
            if len(whole) >= self._split_at:
                self._split(whole)
            return
        shard = self._shard(key)
        size = len(shard)
        shard[key] = value
        self._len += len(shard) - size

    def _split(self, whole: dict[str, V]) -> None:
        if not self._shards:
            self._shards = [self._new_part() for _ in range(SHARDS)]
        for key, value in whole.items():  # in the table's order: each shard in it too
            self._shard(key)[key] = value
        self._len = len(whole)
        self._whole = None

    def pop(self, key: str) -> V | None:
        """The key's value, taken out; None if it was not there."""
        whole = self._whole
        if whole is not None:
            return whole.pop(key, None)
        shard = self._shard(key)
        if key not in shard:
            return None
        self._len -= 1
        return shard.pop(key)

    def __len__(self) -> int:
        whole = self._whole
        return len(whole) if whole is not None else self._len

    def __bool__(self) -> bool:
        return len(self) > 0

    def parts(self) -> list[dict[str, V]]:
        """The table whole, or its shards (a `ShardedLru`'s each in the table's order)."""
        whole = self._whole
        return [whole] if whole is not None else self._shards

    def __iter__(self) -> Iterator[str]:
        """The keys: a `ShardedLru`'s oldest first while whole, shard by shard once split."""
        for part in self.parts():
            yield from part

    def values(self) -> Iterator[V]:
        for part in self.parts():
            yield from part.values()

    def items(self) -> Iterator[tuple[str, V]]:
        for part in self.parts():
            yield from part.items()


class ShardedLru(ShardedDict[V]):
    """An `OrderedDict` of str keys, split over shards once large; see the module contract. Its parts are
    `OrderedDict`s."""

    def __init__(self, salt: int = 0, split_at: int = SPLIT_AT, *, start_up: bool = False) -> None:
        super().__init__(salt, split_at, start_up=start_up)
        self._turn: i64 = 0  # once split: the shard `pop_oldest` and `parts_in_turn` start from

    def _new_part(self) -> dict[str, V]:
        return OrderedDict()

    def _part_of(self, key: str) -> OrderedDict[str, V]:
        whole = self._whole
        return cast(OrderedDict[str, V], whole if whole is not None else self._shard(key))

    def touch(self, key: str) -> V | None:
        """The key's value, the key made the newest; None (and nothing moved) if it is not there."""
        part = self._part_of(key)
        if key not in part:
            return None
        part.move_to_end(key)
        return part[key]

    def move_to_end(self, key: str) -> None:
        """Makes the key the newest (KeyError if it is not there)."""
        self._part_of(key).move_to_end(key)

    def set_newest(self, key: str, value: V) -> None:
        """Assigns the key and makes it the newest, as an `OrderedDict`'s assignment and `move_to_end` do (a
        known key's move only: a new one goes last)."""
        part = self._part_of(key)
        if key in part:
            part[key] = value
            part.move_to_end(key)
        else:
            self[key] = value

    def oldest(self) -> str | None:
        """The oldest key (once split: the head of the next shard in turn); None when empty."""
        for part in self._parts(False):
            for key in part:
                return key
        return None

    def pop_oldest(self) -> tuple[str, V]:
        """`oldest`'s key and its value, taken out (KeyError when empty); once split, the next call starts
        from the next shard."""
        for part in self._parts(True):
            if part:
                key, value = cast(OrderedDict[str, V], part).popitem(last=False)
                if self._whole is None:
                    self._len -= 1
                return key, value
        raise KeyError("pop_oldest from an empty table")

    def parts_in_turn(self) -> list[dict[str, V]]:
        """`parts`, once split starting from the next shard in turn (and the next call from the one after):
        for a caller that takes the oldest entry it can use, so that it takes from every shard alike."""
        return self._parts(True)

    def _parts(self, advance: bool) -> list[dict[str, V]]:
        whole = self._whole
        if whole is not None:
            return [whole]
        turn = self._turn
        if advance:
            self._turn = (turn + 1) & _MASK
        return self._shards[turn:] + self._shards[:turn]
