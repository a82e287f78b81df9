"""With workers, the summed counters on /metrics never go down: a worker that does not answer in time, or one
the supervisor restarted, is counted by what it last reported.

A counter that goes down is a reset to Prometheus, which then counts its whole new value as an increase:
before this, one worker paused past the gather timeout took `saga_calls_total` from 10,440 to 5,178 and back,
and `increase()` over that window reported ~10,440 calls that never happened (the same for the error
counters alerts watch).

Contract: each worker keeps, in the workers' directory,
- `metrics-<i>.last`: the exposition it last gave for /metrics, written each time it gives one (so it is
  never behind what any scrape saw), its incarnation on the first line;
- `metrics-<i>.base`: the counter, histogram and summary samples of its earlier incarnations, summed:
  a worker folds its predecessor's `.last` into it when it starts (`CarriedMetrics.start`), before it answers
  anything, and notes the incarnation folded so a start that fails half-way does not count one twice.
A merge (`CarriedMetrics.texts`) adds every worker's `.base`, and for a worker that did not answer its
`.last` (counted samples only: its gauges are left out, as before). Gauges are never carried. The directory
is the supervisor's and goes with it, so a new `saga serve` starts from zero, as a restarted process does.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable, Sequence

from proxy.metrics import merge_expositions

log = logging.getLogger("saga.proxy")

_COUNTED_TYPES = frozenset({"counter", "histogram", "summary"})
_INCARNATION = "# saga-incarnation "


def counted_part(text: str) -> str:
    """The samples of `text` (an exposition) whose families only grow: counters, histograms, summaries."""
    lines: list[str] = []
    head: list[str] = []
    keep = False
    for line in text.split("\n"):  # not splitlines: a label value may hold U+2028
        if line.startswith("#"):
            head.append(line)
            parts = line.split(" ", 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                keep = parts[3] in _COUNTED_TYPES
                if keep:
                    lines.extend(head)
                head = []
        elif line and keep:
            lines.append(line)
    return "\n".join(lines) + "\n" if lines else ""


def _write(path: str, text: str) -> None:
    """Replaces `path` whole (a reader sees the old file or the new one)."""
    partial = f"{path}.{os.getpid()}.tmp"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(partial, path)


def _read(path: str) -> tuple[str, str] | None:
    """A carried file's (incarnation, exposition); None when it is missing, unreadable or not one of ours."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return None
    first, _, exposition = text.partition("\n")
    if not first.startswith(_INCARNATION):
        return None
    return first[len(_INCARNATION) :], exposition


class CarriedMetrics:
    """One worker's side of the carry (above)."""

    def __init__(self, directory: str, index: int, count: int) -> None:
        self.directory, self.index, self.count = directory, index, count
        self.incarnation = uuid.uuid4().hex

    def _path(self, index: int, kind: str) -> str:
        return os.path.join(self.directory, f"metrics-{index}.{kind}")

    def start(self) -> None:
        """Folds the previous incarnation's last exposition into this worker's base, once, then clears it;
        a directory it cannot write, or files it cannot read as expositions, are logged and carried no further
        (the worker starts anyway: what it would lose is a counter's continuity, not a call)."""
        try:
            self._fold()
        except (OSError, ValueError) as e:
            log.warning("worker %d: could not carry its predecessor's metrics: %s", self.index, e)

    def _fold(self) -> None:
        last = _read(self._path(self.index, "last"))
        if last is not None:
            folded, exposition = last
            base = _read(self._path(self.index, "base"))
            if base is None or base[0] != folded:
                parts = [t for t in ("" if base is None else base[1], counted_part(exposition)) if t]
                summed = merge_expositions(parts, 0).decode() if parts else ""
                # (counted_part drops the merge's own gauges, saga_workers and the like)
                _write(self._path(self.index, "base"), f"{_INCARNATION}{folded}\n{counted_part(summed)}")
        self.remember(b"")  # the predecessor's figures are in the base now, not to be counted twice

    def remember(self, body: bytes) -> None:
        """This worker's exposition, as it gives it to a scrape."""
        try:
            _write(self._path(self.index, "last"), f"{_INCARNATION}{self.incarnation}\n{body.decode()}")
        except OSError as e:  # the directory is gone (the supervisor stopping): nothing left to carry
            log.debug("could not keep this worker's metrics: %s", e)

    def texts(self, live: Sequence[str], missing: Iterable[int]) -> list[str]:
        """The texts to merge: the workers' that answered (`live`), then every worker's base, then the last
        counted samples of each worker in `missing` (unless its base holds them already: a restart that
        stopped between the two writes of `start`)."""
        texts = list(live)
        folded: dict[int, str] = {}
        for index in range(self.count):
            base = _read(self._path(index, "base"))
            if base is not None:
                folded[index] = base[0]
                texts.append(base[1])
        for index in missing:
            last = _read(self._path(index, "last"))
            if last is not None and folded.get(index) != last[0]:
                texts.append(counted_part(last[1]))
        return [t for t in texts if t]
