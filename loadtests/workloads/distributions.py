"""Seeded draws from the distributions WORKLOADS.md states (log-normals given by median and p90, mixtures)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import msgspec

_Z90 = 1.2815515655446004  # standard normal quantile at 0.9


class LogNormal(msgspec.Struct, frozen=True):
    """A log-normal given by its median and p90 (the way agent-trace statistics are usually quoted)."""

    median: float
    p90: float
    cap: float = math.inf

    def draw(self, rng: random.Random) -> float:
        sigma = math.log(self.p90 / self.median) / _Z90
        return min(rng.lognormvariate(math.log(self.median), sigma), self.cap)

    @classmethod
    def from_mean_sd(cls, mean: float, sd: float, cap: float = math.inf) -> LogNormal:
        """The log-normal with this mean and standard deviation (how trace catalogs quote them)."""
        sigma = math.sqrt(math.log(1 + (sd / mean) ** 2))
        median = mean / math.exp(sigma**2 / 2)
        return cls(median, median * math.exp(sigma * _Z90), cap)

    @classmethod
    def from_median_mean(cls, median: float, mean: float, cap: float = math.inf) -> LogNormal:
        """mean = median * exp(sigma^2 / 2) for a log-normal."""
        sigma = math.sqrt(2 * math.log(mean / median))
        return cls(median, median * math.exp(sigma * _Z90), cap)


class Uniform(msgspec.Struct, frozen=True):
    low: float
    high: float

    def draw(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


Dist = LogNormal | Uniform


class ToolKind(msgspec.Struct, frozen=True):
    name: str
    weight: float
    latency_s: Dist


def draw_tool(rng: random.Random, kinds: Sequence[ToolKind]) -> tuple[str, float]:
    """A tool name and its latency from a weighted mixture (weights need not sum to 1)."""
    (kind,) = rng.choices(kinds, weights=[k.weight for k in kinds])
    return kind.name, kind.latency_s.draw(rng)
