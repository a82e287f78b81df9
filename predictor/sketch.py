"""A bounded streaming distribution: counts in fixed log-spaced buckets.

Why this sketch: agent gaps span six decades (an editor call of 2 ms, a test suite of minutes, a person's
think time of a quarter hour) and token counts five; a log-spaced histogram keeps a relative error that is the
same at every scale, costs a fixed `buckets` doubles whatever the traffic, merges by adding counts (so a
node's distribution is the sum of its edges'), and decays for drift by scaling every count.

Contract: values <= `low` land in bucket 0 and values >= `high` in the last; `quantile(q)` interpolates
geometrically inside the bucket, so its relative error is at most one bucket ratio (`(high/low) **
(1/buckets)`, 1.21 with the defaults for seconds); an empty sketch answers NaN.
"""

from __future__ import annotations

import functools
import math
from array import array
from collections.abc import Iterable


class LogSketch:
    """Weighted counts of positive values in `buckets` log-spaced buckets between `low` and `high`."""

    __slots__ = (
        "_counts",
        "_log_high",
        "_log_low",
        "_memo",
        "_mids",
        "_step",
        "_weighted",
        "buckets",
        "high",
        "low",
        "total",
    )

    def __init__(self, low: float, high: float, buckets: int) -> None:
        if not 0 < low < high or buckets < 2:
            raise ValueError(f"LogSketch needs 0 < low < high and >= 2 buckets, got {low}, {high}, {buckets}")
        self.low, self.high, self.buckets = low, high, buckets
        self._log_low = math.log(low)
        self._log_high = math.log(high)
        self._step = (self._log_high - self._log_low) / buckets
        self._counts = array("d", bytes(8 * buckets))
        self._mids = _midpoints(low, high, buckets)  # shared by every sketch of this layout
        self.total = 0.0
        self._weighted = 0.0  # sum of count x bucket midpoint, kept as counts change: the mean without a walk
        # Answers that walk every bucket (mean, residual means), kept until the counts change: a scheduler
        # asks them of the same sketch on every call while it learns far less often.
        self._memo: dict[object, float] | None = None

    def _changed(self) -> None:
        if self._memo:
            self._memo.clear()

    def _index(self, value: float) -> int:
        if value <= self.low:
            return 0
        if value >= self.high:
            return self.buckets - 1
        return min(self.buckets - 1, int((math.log(value) - self._log_low) / self._step))

    def add(self, value: float, weight: float = 1.0) -> None:
        self.add_at(self._index(value), weight)

    def index_of(self, value: float) -> int:
        """The bucket `value` falls in (the same in every sketch of this layout)."""
        return self._index(value)

    def add_at(self, i: int, weight: float = 1.0) -> None:
        """Add `weight` to bucket `i` (from `index_of`: one log per value for several sketches)."""
        self._counts[i] += weight
        self.total += weight
        self._weighted += weight * self._mids[i]
        self._changed()

    @staticmethod
    def add_one_at(sketches: Iterable[LogSketch], i: int) -> None:
        """`add_at(i)` (weight 1) on each of `sketches` (same layout), in one loop: what a graph does to an
        edge and its running sums on every transition."""
        for s in sketches:
            s._counts[i] += 1.0
            s.total += 1.0
            s._weighted += s._mids[i]
            if s._memo:
                s._memo.clear()

    def remove(self, value: float, weight: float = 1.0) -> None:
        """Take back up to `weight` of an observation of `value` (never below zero: it may have decayed)."""
        i = self._index(value)
        taken = min(self._counts[i], weight)
        self._counts[i] -= taken
        self.total -= taken
        self._weighted -= taken * self._mids[i]
        self._changed()

    def residual_mean(self, at_least: float) -> float:
        """E[X - at_least | X > at_least] over bucket midpoints (NaN when no mass lies above `at_least`)."""
        memo = self._memo
        if memo is None:
            memo = self._memo = {}
        got = memo.get(at_least)
        if got is not None:
            return got
        mass = excess = 0.0
        for c, mid in zip(self._counts, self._mids, strict=True):
            if c > 0 and mid > at_least:
                mass += c
                excess += c * (mid - at_least)
        got = memo[at_least] = excess / mass if mass > 0 else math.nan
        return got

    def scale(self, factor: float) -> None:
        """Multiply every count by `factor` (decay: old observations weigh less)."""
        counts = self._counts
        for i in range(self.buckets):
            counts[i] *= factor
        self.total *= factor
        self._weighted *= factor
        self._changed()

    def merge_into(self, other: LogSketch, weight: float = 1.0) -> None:
        """Add this sketch's counts, times `weight`, to `other` (same bucket layout)."""
        if (other.low, other.high, other.buckets) != (self.low, self.high, self.buckets):
            raise ValueError("cannot merge sketches with different buckets")
        dst = other._counts
        for i, c in enumerate(self._counts):
            if c:
                dst[i] += c * weight
        other.total += self.total * weight
        other._weighted += self._weighted * weight
        other._changed()

    def _edge(self, i: float) -> float:
        return math.exp(self._log_low + i * self._step)

    def quantile(self, q: float) -> float:
        if self.total <= 0:
            return math.nan
        target = min(max(q, 0.0), 1.0) * self.total
        seen = 0.0
        for i, c in enumerate(self._counts):
            if c > 0 and seen + c >= target:
                return self._edge(i + (target - seen) / c)
            seen += c
        return self.high

    def cdf(self, value: float) -> float:
        """P(X <= value), interpolating inside the bucket (0 for an empty sketch)."""
        if self.total <= 0 or value <= 0:
            return 0.0
        if value >= self.high:
            return 1.0
        if value <= self.low:
            return self._counts[0] / self.total * 0.5
        pos = (math.log(value) - self._log_low) / self._step
        i = min(self.buckets - 1, int(pos))
        below = 0.0
        counts = self._counts
        for j in range(i):  # left to right, not sum(): Python 3.12's sum() compensates (see graph.py)
            below += counts[j]
        return (below + self._counts[i] * (pos - i)) / self.total

    def conditional_quantile(self, q: float, beyond: float) -> float:
        """The q-quantile of X given X > `beyond` (for a session that has already waited `beyond`)."""
        base = self.cdf(beyond) if beyond > 0 else 0.0
        if base >= 1.0:
            return max(beyond, self.high)
        return max(beyond, self.quantile(base + q * (1.0 - base)))

    def mean(self) -> float:
        if self.total <= 0:
            return math.nan
        return self._weighted / self.total

    def cdf_steps(self) -> tuple[list[float], list[float]]:
        """The cdf at the edges of the non-empty buckets, from `low` (0) to the last one's high edge (1): xs
        and cum (an empty bucket between two non-empty ones adds a flat step); what `ReturnModel` walks, built
        in one loop over the counts (it is rebuilt as the graph learns, inside a call)."""
        edges = _edges(self.low, self.high, self.buckets)
        total = self.total
        last_x, last_c = self.low, 0.0
        xs, cum = [last_x], [last_c]
        for i, c in enumerate(self._counts):
            if c > 0:
                lo = edges[i]
                if lo > last_x:
                    xs.append(lo)
                    cum.append(last_c)
                last_x, last_c = edges[i + 1], last_c + c / total
                xs.append(last_x)
                cum.append(last_c)
        cum[-1] = 1.0
        return xs, cum

    def nonzero(self) -> Iterable[tuple[float, float, float]]:
        """(bucket low, bucket high, count) of the non-empty buckets, for export."""
        edges = _edges(self.low, self.high, self.buckets)
        for i, c in enumerate(self._counts):
            if c > 0:
                yield edges[i], edges[i + 1], c


def seconds_sketch() -> LogSketch:
    """Gaps between calls: 1 ms to 2 h, ratio 1.21 per bucket."""
    return LogSketch(1e-3, 7200.0, 80)


def tokens_sketch() -> LogSketch:
    """Token counts: 1 to 1M tokens, ratio 1.19 per bucket."""
    return LogSketch(1.0, 1e6, 80)


@functools.cache
def _midpoints(low: float, high: float, buckets: int) -> tuple[float, ...]:
    """Geometric midpoints of the buckets of a layout, as `LogSketch._edge(i + 0.5)` computes them."""
    log_low = math.log(low)
    step = (math.log(high) - log_low) / buckets
    return tuple(math.exp(log_low + (i + 0.5) * step) for i in range(buckets))


@functools.cache
def _edges(low: float, high: float, buckets: int) -> tuple[float, ...]:
    """The bucket edges of a layout, as `LogSketch._edge(i)` computes them (a return model reads them all)."""
    log_low = math.log(low)
    step = (math.log(high) - log_low) / buckets
    return tuple(math.exp(log_low + i * step) for i in range(buckets + 1))
