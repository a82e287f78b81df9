"""What the workers' predictors learn, shared: with `saga serve --workers N` each worker's predictor sees only
the sessions it owns, so alone it learns an agent type from 1/N of its tasks; every sync period each worker
publishes what its graphs learned (`Predictor.take_learned`) and replays the others' (`Predictor.learn`), so
every worker's graphs learn from every task, about one period late.

Layout: one ring per worker, the file `learned-<i>.ring` in the worker directory, written only by worker i:
an int64 write position (bytes written since the ring was made, only growing), then `size` bytes of data
holding the latest batches, each a 4-byte length and a msgpack list of observations, wrapping at the end.

Contract:
- Single writer, lock-free readers: the writer copies a batch in, then advances the position (one aligned
  8-byte store); a reader copies the bytes between its cursor and the position, then reads the position
  again and keeps the copy only if the writer cannot have overwritten it meanwhile, nor be overwriting it
  (a batch being copied in, at most half the ring, is past the position it reads: a copy more than half a
  ring behind is dropped).
- A reader that falls more than `size` behind (or whose copy may be overwritten) skips to the writer's
  position and counts the bytes it lost in `lost_bytes`: those observations are not learned here, nothing
  else is wrong. A reader starts at the position it finds (history before it is not replayed).
- A batch that does not fit in half the ring is not published (`dropped` counts its observations).
- A batch that does not decode (a ring of an unexpected shape) is skipped, and the reader moves to the
  writer's position.
- A restarted worker continues its ring's position, so readers' cursors stay valid.
- Bounded: workers x (8 + `size`) bytes on disk and mapped, fixed at open (1 MiB a worker by default, some
  seconds of observations at thousands of calls a second).
"""

from __future__ import annotations

import mmap
import os

import msgspec

from predictor.predictor import Learned
from proxy.shared_load import map_shared

DEFAULT_SIZE = 1 << 20
_HEADER = 8
_LENGTH = 4


def ring_path(directory: str, index: int) -> str:
    return os.path.join(directory, f"learned-{index}.ring")


class LearningRings:
    """This worker's ring to write and the others' to read."""

    def __init__(self, directory: str, workers: int, index: int, size: int = DEFAULT_SIZE) -> None:
        if not (workers >= 1 and 0 <= index < workers) or size < 64:
            raise ValueError(f"learning rings: worker {index} of {workers}, {size} bytes")
        self.index, self.size = index, size
        self._maps = {i: map_shared(ring_path(directory, i), _HEADER + size) for i in range(workers)}
        self._positions = {i: memoryview(m)[:_HEADER].cast("q") for i, m in self._maps.items()}
        self._cursors = {i: self._positions[i][0] for i in self._maps if i != index}
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(list[tuple[int, str, str, str, float, float, float, int]])
        self.published = 0  # observations this worker wrote to its ring
        self.replayed = 0  # observations read from the others' rings
        self.dropped = 0  # this worker's observations in batches too large to publish
        self.lost_bytes = 0  # others' batches overwritten before this worker read them
        self.undecodable = 0  # batches that did not decode

    def publish(self, learned: list[Learned]) -> None:
        if not learned:
            return
        payload = self._encoder.encode(learned)
        record = len(payload).to_bytes(_LENGTH, "little") + payload
        if len(record) > self.size // 2:
            self.dropped += len(learned)
            return
        ring, position = self._maps[self.index], self._positions[self.index]
        start = position[0]
        self._copy_in(ring, start, record)
        position[0] = start + len(record)  # after the bytes: a reader that sees it sees them
        self.published += len(learned)

    def read_others(self) -> list[Learned]:
        learned: list[Learned] = []
        for i, cursor in self._cursors.items():
            position = self._positions[i]
            end = position[0]
            if end - cursor > self.size or end < cursor:  # overrun, or a ring made anew
                self.lost_bytes += max(0, end - cursor)
                self._cursors[i] = end
                continue
            data = self._copy_out(self._maps[i], cursor, end)
            now = position[0]
            # The writer copies a batch (at most half the ring) in before it moves the position: bytes more
            # than size - size // 2 behind the position may be under that copy as we read them.
            if now - cursor > self.size - self.size // 2:  # overwritten, or maybe being, while copied
                self.lost_bytes += end - cursor
                self._cursors[i] = now
                continue
            self._cursors[i] = self._decode(data, learned, i, end)
        self.replayed += len(learned)
        return learned

    def _decode(self, data: bytes, into: list[Learned], ring: int, end: int) -> int:
        at = 0
        while at + _LENGTH <= len(data):
            length = int.from_bytes(data[at : at + _LENGTH], "little")
            batch = data[at + _LENGTH : at + _LENGTH + length]
            try:
                if len(batch) < length:
                    raise msgspec.DecodeError("a batch cut short")
                into += self._decoder.decode(batch)
            except msgspec.DecodeError:
                self.undecodable += 1
                return self._positions[ring][0]
            at += _LENGTH + length
        return end

    def _copy_in(self, ring: mmap.mmap, start: int, record: bytes) -> None:
        offset = start % self.size
        first = min(len(record), self.size - offset)
        ring[_HEADER + offset : _HEADER + offset + first] = record[:first]
        if first < len(record):
            ring[_HEADER : _HEADER + len(record) - first] = record[first:]

    def _copy_out(self, ring: mmap.mmap, start: int, end: int) -> bytes:
        offset, length = start % self.size, end - start
        first = min(length, self.size - offset)
        data = ring[_HEADER + offset : _HEADER + offset + first]
        if first < length:
            data += ring[_HEADER : _HEADER + length - first]
        return data

    def close(self) -> None:
        for position in self._positions.values():
            position.release()
        for ring in self._maps.values():
            ring.close()
