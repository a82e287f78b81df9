"""When (and whether) a waiting session comes back: a frozen gap distribution and an end probability.

Built once when a call ends, from the graph's gap sketch for the session's state (or the prior), so that a
retention policy can re-ask it cheaply as the silence goes on: `p_return(waited)` falls as the session stays
quiet longer than its state's gaps usually last (Bayes: P(return | silent for t) = (1 - p_end) S(t) /
((1 - p_end) S(t) + p_end), S the gap's survival function), and `conditional_quantile(q, waited)` is the gap
by which it has returned with probability q given that it is still silent after `waited`.

Contract: cdf and quantile interpolate geometrically inside the sketch's buckets; O(log buckets) per question.
"""

from __future__ import annotations

import math
from bisect import bisect_right

from predictor.sketch import LogSketch

_MAX_MEMO = 16
_HIT_RATE_STEPS = 40  # silences are rounded to e^(1/40): 2.5%
_MAX_HIT_RATES = 64  # per model (models are cached by the thousand): cleared when full


class ReturnModel:
    __slots__ = (
        "_cum",
        "_hit_rates",
        "_levels",
        "_quantiles",
        "_survival_integral",
        "_xs",
        "asked_by",
        "p_end",
        "ttl_answer",
    )

    def __init__(self, gap: LogSketch, p_end: float) -> None:
        if gap.total <= 0:
            raise ValueError("ReturnModel needs a non-empty gap sketch")
        self.p_end = min(max(p_end, 0.0), 1.0)
        self._xs, self._cum = gap.cdf_steps()
        # The few fixed levels a scheduler asks of a model it shares between calls (bounded: levels
        # derived from a silence are many and not kept).
        self._quantiles: dict[float, float] = {}
        self._survival_integral: list[float] | None = None
        self._hit_rates: dict[int, float] = {}
        self._levels: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # conditional_quantiles at 0
        # The retention answer (TTL, priority) computed from this model by `asked_by`
        # (proxy/scheduler/ttl_answers.py), kept here so that it goes when the predictor replaces the model: a
        # table of answers keyed by model kept every replaced model alive until it was cleared.
        self.asked_by: object | None = None
        self.ttl_answer: tuple[float | None, int | None] | None = None

    def cdf(self, x: float) -> float:
        xs, cum = self._xs, self._cum
        if x <= xs[0]:
            return 0.0
        if x >= xs[-1]:
            return 1.0
        i = bisect_right(xs, x) - 1
        frac = math.log(x / xs[i]) / math.log(xs[i + 1] / xs[i])
        return cum[i] + frac * (cum[i + 1] - cum[i])

    def quantile(self, q: float) -> float:
        got = self._quantiles.get(q)
        if got is not None:
            return got
        got = self._quantile(q)
        if len(self._quantiles) < _MAX_MEMO:
            self._quantiles[q] = got
        return got

    def _quantile(self, q: float) -> float:
        xs, cum = self._xs, self._cum
        q = min(max(q, 0.0), 1.0)
        i = min(max(bisect_right(cum, q) - 1, 0), len(xs) - 2)
        while cum[i + 1] <= cum[i] and i + 2 < len(xs):  # skip empty stretches
            i += 1
        span = cum[i + 1] - cum[i]
        frac = 0.0 if span <= 0 else min(1.0, max(0.0, (q - cum[i]) / span))
        return float(xs[i] * (xs[i + 1] / xs[i]) ** frac)

    def p_return(self, waited: float = 0.0) -> float:
        alive = (1.0 - self.p_end) * (1.0 - self.cdf(waited) if waited > 0 else 1.0)
        total = alive + self.p_end
        return alive / total if total > 0 else 0.0

    def conditional_quantile(self, q: float, waited: float = 0.0) -> float:
        """The gap (from the answer) by which the session has returned with probability q, given it returns
        and is still silent after `waited` seconds."""
        if waited <= 0:
            return self.quantile(q)
        base = self.cdf(waited)
        if base >= 1.0:
            return max(waited, self._xs[-1])
        return max(waited, self._quantile(base + q * (1.0 - base)))

    def conditional_quantiles(self, qs: tuple[float, ...], waited: float = 0.0) -> tuple[float, ...]:
        """`conditional_quantile(q, waited)` for each of `qs` (at `waited` 0, kept for the last `qs` asked:
        a scheduler asks the same levels of a shared model right after each call)."""
        if waited > 0:
            return tuple(self.conditional_quantile(q, waited) for q in qs)
        levels = self._levels
        if levels is not None and levels[0] == qs:
            return levels[1]
        got = tuple(self.quantile(q) for q in qs)
        self._levels = (qs, got)
        return got

    def conditional_mean(self, waited: float = 0.0) -> float:
        """E[gap | gap > waited] (mass spread log-uniformly inside each bucket), at least `waited`."""
        xs, cum = self._xs, self._cum
        base = self.cdf(waited) if waited > 0 else 0.0
        if base >= 1.0:
            return max(waited, xs[-1])
        total = 0.0
        for i in range(len(xs) - 1):
            a, b, mass = xs[i], xs[i + 1], cum[i + 1] - cum[i]
            if mass <= 0 or b <= waited:
                continue
            if a < waited:  # the part of the bucket above `waited`
                mass *= math.log(b / waited) / math.log(b / a)
                a = waited
            total += mass * (b - a) / math.log(b / a) if b > a else mass * a
        return max(waited, total / (1.0 - base))

    def hit_rate(self, waited: float = 0.0) -> float:
        """The most returns per second of holding a session's KV that holding it from now on can earn: the
        max over horizons T of P(it returns by T | silent for `waited`) / E[seconds held until it returns or
        T] (a session that never returns is held to T). Higher is worth more per block-second: a cache keeps
        the highest (for one size of prefix, what it saves is proportional to the blocks it holds). Evaluated
        at `waited` rounded to 2.5% (kept per model: entries of one state ask at nearby silences)."""
        xs = self._xs
        waited = max(waited, xs[0])
        if waited >= xs[-1]:
            return 0.0
        step = round(math.log(waited / xs[0]) * _HIT_RATE_STEPS)
        got = self._hit_rates.get(step)
        if got is None:
            got = self._hit_rate_at(min(xs[0] * math.exp(step / _HIT_RATE_STEPS), xs[-1]))
            if len(self._hit_rates) >= _MAX_HIT_RATES:
                self._hit_rates.clear()
            self._hit_rates[step] = got
        return got

    def _hit_rate_at(self, waited: float) -> float:
        xs, cum = self._xs, self._cum
        integral = self._survival_integral
        if integral is None:  # the integral of the gap's survival function from xs[0] to each edge
            integral = [0.0]
            for k in range(1, len(xs)):
                integral.append(integral[-1] + _survival_area(xs[k - 1], xs[k], cum[k - 1], cum[k], xs[k]))
            self._survival_integral = integral
        i = min(max(bisect_right(xs, waited) - 1, 0), len(xs) - 2)
        base = self.cdf(waited)
        alive = 1.0 - base
        if alive <= 1e-12:
            return 0.0
        area = integral[i] + _survival_area(xs[i], xs[i + 1], cum[i], cum[i + 1], waited)
        a = (1.0 - self.p_end) * alive / ((1.0 - self.p_end) * alive + self.p_end)
        best = 0.0
        for j in range(i + 1, len(xs)):
            held = a * (integral[j] - area) / alive + (1.0 - a) * (xs[j] - waited)
            if held > 0:
                best = max(best, a * (cum[j] - base) / alive / held)
        return best


def _survival_area(x0: float, x1: float, c0: float, c1: float, upto: float) -> float:
    """The integral of 1 - cdf from x0 to `upto` (<= x1), the cdf linear in log t from c0 (x0) to c1 (x1)."""
    if upto <= x0:
        return 0.0
    s0, slope = 1.0 - c0, (c1 - c0) / math.log(x1 / x0)
    # integral of s0 - slope * ln(t / x0) dt from x0 to upto
    return s0 * (upto - x0) - slope * (upto * math.log(upto / x0) - (upto - x0))
