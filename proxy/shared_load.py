"""The workers' shared load table: each worker's KV reservations and calls in flight per replica, in one
memory-mapped file, so every worker of `saga serve --workers N` can count the others' load.

Layout: the file `load.table` in the worker directory (`WorkerSet.directory`, private to the supervisor's
run) holds one fixed-size region per worker, region i written only by worker i. A region is int64 words:
a sequence counter (odd while its writer is writing), a heartbeat (the writer's `time.monotonic_ns()` at its
last publish: CLOCK_MONOTONIC, one clock for every process on the host), the number of records, the number of
replicas left out, the new workflows waiting for admission in the writer and the new workflows it admitted so
far, the number of tenants that sent it calls lately, its calls held and workflows waiting now (`LiveCount`),
up to `TENANT_WORDS` of the tenants' keys, then `slots`
records of (replica key, KV tokens reserved, calls in flight, calls held in its release queue for the replica,
calls it released from there to the replica so far).

Contract:
- Replicas come and go (admin API, DNS discovery), so a publish rewrites the writer's whole list: record k is
  whichever replica came k-th this time, keyed by `replica_key` (a stable hash of its URL: the same in every
  process). Readers sum by key; a key a reader does not know is ignored.
- Slots run out: a worker with more than `slots` replicas publishes the first `slots` in its order and
  counts the rest in its region's `dropped` (`publish` returns it). Those replicas are scheduled by each
  worker on its own load alone, as in a single-process proxy. 1,024 slots by default (24 KiB a region).
- No torn record: the writer makes the counter odd, writes, makes it even again (aligned 8-byte stores, in
  program order on x86-64 and between two separate C calls on any CPU Python runs on); a reader copies the
  region between two reads of the counter and retries a few times while they differ or are odd. After the
  retries it keeps the region's last consistent copy.
- A dead worker: a region whose heartbeat (as last read consistently) is older than `stale_after_ns`, or
  that was never written, counts for nothing. A worker restarted at the same index continues its counter.
- Two words of a region are written outside that protocol, as soon as their count changes (`LiveCount`: the
  calls held in the writer's release queue and the workflows waiting in its admission, for the bounds the
  workers share).
- Tenants: a writer with more lately active tenants than `TENANT_WORDS` lists that many and counts the rest;
  a reader counts the distinct listed keys and adds the unlisted (an upper bound, exact up to 16 a worker).
- Bounded: workers x (200 + 40 x slots) bytes, fixed at open.
"""

from __future__ import annotations

import hashlib
import mmap
import operator
import os
from array import array
from collections.abc import Iterable, Sequence

TABLE_FILE = "load.table"
DEFAULT_SLOTS = 1024
TENANT_WORDS = 16
# words: sequence, heartbeat (ns), records, dropped, workflows waiting, workflows admitted, active tenants,
# calls held now, workflows waiting now, then up to TENANT_WORDS of the tenants' keys
_TENANTS = 9  # the first tenant key's word (7 and 8: the live counts, `LiveCount`)
_HEADER = _TENANTS + TENANT_WORDS
_RECORD = 5  # words: replica key, reserved tokens, calls in flight, calls held, calls released so far
_WORD = 8
_READ_TRIES = 4


def replica_key(replica_id: str) -> int:
    """A replica's (or a tenant's) key in the table: the same in every process and run (not Python's salted
    `hash`)."""
    digest = hashlib.blake2b(replica_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def map_shared(path: str, size: int) -> mmap.mmap:
    """The file at `path` (in the worker directory) mapped shared, made (mode 0600) and grown to `size` bytes
    when smaller: every worker grows it to the same size, so there is no race to lose."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)  # the mapping keeps the file open


HELD_NOW = 7  # the calls a worker's release queue holds (`LiveCount`)
WAITING_NOW = 8  # the new workflows waiting in its admission


class LiveCount:
    """One word of every worker's region that its worker rewrites as soon as its count changes, not at the
    sync: a bound the workers share (proxy/scheduler/shared_bound.py) then reads the others' counts as they
    are, so a burst of calls spread over the workers within one sync period does not pass it N times over.
    One aligned 8-byte store: no reader sees it torn. Summed over the workers live at the last `others`."""

    __slots__ = ("_base", "_region", "_table", "_word")

    def __init__(self, table: LoadTable, word: int) -> None:
        self._table, self._word, self._region = table, word, table._region
        self._base = table.index * table._region + word
        table._words[self._base] = 0  # a worker restarted at this index holds nothing yet

    def publish(self, own: int) -> None:
        self._table._words[self._base] = own

    def others(self) -> int:
        words, region, word = self._table._words, self._region, self._word
        return sum(words[worker * region + word] for worker in self._table.live)

    def workers(self) -> int:
        return len(self._table.live) + 1


class _Region:
    """One worker's region as last read whole."""

    __slots__ = ("active_tenants", "admitted", "heartbeat", "records", "tenants", "waiting")

    def __init__(
        self,
        heartbeat: int,
        records: list[int],
        waiting: int,
        admitted: int,
        active_tenants: int,
        tenants: list[int],
    ) -> None:
        self.heartbeat = heartbeat
        self.records = records
        self.waiting = waiting
        self.admitted = admitted
        self.active_tenants = active_tenants
        self.tenants = tenants


def region_words(slots: int) -> int:
    return _HEADER + _RECORD * slots


class LoadTable:
    """This worker's view of the table: `publish` writes its own region, `others` sums the live others'."""

    def __init__(self, directory: str, workers: int, index: int, slots: int = DEFAULT_SLOTS) -> None:
        if not (workers >= 1 and 0 <= index < workers) or slots < 1:
            raise ValueError(f"load table: worker {index} of {workers}, {slots} slots")
        self.workers, self.index, self.slots = workers, index, slots
        self._region = region_words(slots)
        size = workers * self._region * _WORD
        self.path = os.path.join(directory, TABLE_FILE)
        self._map = map_shared(self.path, size)
        self._words = memoryview(self._map).cast("q")
        base = index * self._region
        self._seq = self._words[base] + (self._words[base] & 1)  # a restart continues (even) its counter
        # worker -> its region's last consistent copy
        self._last: dict[int, _Region] = {}
        self.waiting = 0  # the live other workers' waiting workflows, as of the last `others`
        # the live other workers with workflows waiting: worker -> the new workflows it admitted so far
        self.turns: dict[int, int] = {}
        # replica key -> {worker: calls it released there so far}, for the live other workers holding calls
        # for that replica in their release queues
        self.lanes: dict[int, dict[int, int]] = {}
        # the live other workers' lately active tenants: their distinct keys, and how many they did not list
        self.tenants: set[int] = set()
        self.tenants_unlisted = 0
        self.live: list[int] = []  # the live other workers
        self.torn_reads = 0  # reads that found the region being written (retried)

    def publish(
        self,
        loads: Iterable[tuple[int, int, int, int, int]],
        now_ns: int,
        waiting: int = 0,
        admitted: int = 0,
        active_tenants: int = 0,
        tenants: Sequence[int] = (),
    ) -> int:
        """Write this worker's (replica key, reserved tokens, calls in flight, calls held, calls released so
        far) records, its number of new workflows `waiting` for admission and of those it `admitted` so far,
        how many tenants were active here lately and the keys of up to `TENANT_WORDS` of them (`tenants`), and
        its heartbeat; returns how many replicas did not fit in
        the slots (left out)."""
        records = list(loads)
        dropped = max(0, len(records) - self.slots)
        if dropped:
            del records[self.slots :]
        flat = array("q", [value for record in records for value in record])
        listed = tenants[:TENANT_WORDS]
        words, base = self._words, self.index * self._region
        self._seq += 1
        words[base] = self._seq  # odd: being written
        words[base + 1] = now_ns
        words[base + 2] = len(records)
        words[base + 3] = dropped
        words[base + 4] = waiting
        words[base + 5] = admitted
        words[base + 6] = max(active_tenants, len(listed))
        words[base + _TENANTS : base + _TENANTS + len(listed)] = array("q", listed)
        start = base + _HEADER
        words[start : start + len(flat)] = flat
        self._seq += 1
        words[base] = self._seq  # even: consistent
        return dropped

    def others(self, now_ns: int, stale_after_ns: int) -> dict[int, tuple[int, int]]:
        """replica key -> (reserved tokens, calls in flight) summed over the other workers whose heartbeat is
        at most `stale_after_ns` old; their waiting workflows, summed too, are left in `waiting`, the
        admissions so far of those with workflows waiting in `turns`, the releases so far of those holding
        calls for a replica in `lanes`, their tenants in `tenants` and `tenants_unlisted`, and which they are
        in `live`."""
        # Workers usually list the same replicas in the same order: their columns add up element-wise (in C);
        # a region with another list is merged key by key.
        keys: list[int] | None = None
        reserved: list[int] = []
        in_flight: list[int] = []
        odd: list[list[int]] = []
        waiting = unlisted = 0
        live: list[int] = []
        turns: dict[int, int] = {}
        lanes: dict[int, dict[int, int]] = {}
        tenants: set[int] = set()
        for worker in range(self.workers):
            if worker == self.index:
                continue
            region = self._read(worker)
            if region is None or now_ns - region.heartbeat > stale_after_ns:
                continue
            records = region.records
            live.append(worker)
            waiting += region.waiting
            if region.waiting:
                turns[worker] = region.admitted
            tenants.update(region.tenants)
            unlisted += region.active_tenants - len(region.tenants)
            held = records[3::_RECORD]
            if any(held):
                for i, count in enumerate(held):
                    if count:
                        lanes.setdefault(records[_RECORD * i], {})[worker] = records[_RECORD * i + 4]
            if keys is None:
                keys, reserved, in_flight = records[0::_RECORD], records[1::_RECORD], records[2::_RECORD]
            elif records[0::_RECORD] == keys:
                reserved = list(map(operator.add, reserved, records[1::_RECORD]))
                in_flight = list(map(operator.add, in_flight, records[2::_RECORD]))
            else:
                odd.append(records)
        self.waiting, self.turns, self.lanes = waiting, turns, lanes
        self.tenants, self.tenants_unlisted = tenants, unlisted
        self.live = live
        totals = dict(zip(keys or (), zip(reserved, in_flight, strict=True), strict=True))
        for records in odd:
            for i in range(0, len(records), _RECORD):
                key = records[i]
                was = totals.get(key, (0, 0))
                totals[key] = (was[0] + records[i + 1], was[1] + records[i + 2])
        return totals

    def _read(self, worker: int) -> _Region | None:
        """The worker's region as of its last consistent read (None: never written, or never read whole)."""
        words, base = self._words, worker * self._region
        for _ in range(_READ_TRIES):
            seq, heartbeat, count, waiting = words[base], words[base + 1], words[base + 2], words[base + 4]
            admitted, active = words[base + 5], words[base + 6]
            if seq & 1 or not 0 <= count <= self.slots or active < 0:
                self.torn_reads += 1
                continue
            tenants = words[base + _TENANTS : base + _TENANTS + min(active, TENANT_WORDS)].tolist()
            start = base + _HEADER
            records = words[start : start + _RECORD * count].tolist()
            if words[base] != seq:
                self.torn_reads += 1
                continue
            if seq == 0:
                return None  # never written
            self._last[worker] = _Region(heartbeat, records, waiting, admitted, active, tenants)
            break
        return self._last.get(worker)

    def live_count(self, word: int) -> LiveCount:
        return LiveCount(self, word)

    def close(self) -> None:
        self._words.release()
        self._map.close()
