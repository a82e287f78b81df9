"""Per-session gap scale: how much longer (or shorter) than its states' usual gaps a session's gaps run.

Some sessions are consistently slow or fast (a slow sandbox, a person who reads slowly); a state's gap
distribution cannot tell them apart, the session's own history can. For each gap a session came back from,
r = log(gap / median gap of the state it waited in); the session's scale is exp(sum r / (n + w)), its mean
log ratio shrunk towards 0 (scale 1: trust the state) by w pseudo-gaps. A retention policy stretches the
state's gap distribution by the scale (`PredictedRetention`).

The weight w is either fixed or learned (empirical Bayes, random effects r = b_session + e): the covariance
of consecutive ratios of one session estimates the between-session variance var(b), the variance of all
ratios var(b) + var(e), and w = var(e) / var(b), per agent type (their gaps spread differently). While the
correlation of consecutive ratios is not clearly above 0 (fewer than `min_pairs` pairs, or under
max(`min_correlation`, 3 / sqrt(pairs)): the drift of a young state's median alone correlates a session's
ratios a little) the scale is 1: in the generated workloads every gap is drawn independently given the
tool, and a per-session scale would only add noise there (docs/results/predictor.md).

Contract: pure; memory bounded by `max_sessions` (least recently waiting forgotten), `max_groups` agent
types (least recently used forgotten) and decayed running sums; O(1) per call.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from predictor.return_model import ReturnModel

_DECAY_PAIRS = 20_000.0  # the running sums halve past this many pairs (drift is followed)


class _Pairs:
    """Decayed running sums over consecutive log ratios of one session (x: the previous, y: the next)."""

    __slots__ = ("n", "sx", "sxy", "sy", "syy")

    def __init__(self) -> None:
        self.n = self.sx = self.sy = self.sxy = self.syy = 0.0

    def add(self, x: float, y: float) -> None:
        if self.n >= _DECAY_PAIRS:
            self.n, self.sx, self.sy, self.sxy, self.syy = (
                v / 2 for v in (self.n, self.sx, self.sy, self.sxy, self.syy)
            )
        self.n += 1
        self.sx += x
        self.sy += y
        self.sxy += x * y
        self.syy += y * y

    def weight(self, min_pairs: int, min_correlation: float) -> float:
        n = self.n
        if n < min_pairs:
            return math.inf
        mx, my = self.sx / n, self.sy / n
        cov = self.sxy / n - mx * my
        var = self.syy / n - my * my
        if var <= 0 or cov <= var * max(min_correlation, 3.0 / math.sqrt(n)):
            return math.inf
        return max(var - cov, 0.0) / cov


class SessionGapScale:
    def __init__(
        self,
        weight: float | None,
        *,
        max_sessions: int = 100_000,
        max_groups: int = 64,
        min_pairs: int = 500,
        min_correlation: float = 0.1,
    ) -> None:
        self.fixed_weight = weight
        self.max_sessions, self.max_groups = max_sessions, max_groups
        self.min_pairs, self.min_correlation = min_pairs, min_correlation
        # session -> (agent type, sum of log ratios, gaps seen, start of its current wait, that state's
        # median gap (0 once it came back), its last log ratio or nan)
        self._sessions: OrderedDict[str, tuple[str, float, int, float, float, float]] = OrderedDict()
        self._pairs: OrderedDict[str, _Pairs] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.fixed_weight is None or self.fixed_weight > 0

    def weight(self, group: str) -> float:
        """Pseudo-gaps shrinking a session's mean ratio towards 0 (inf: no per-session information)."""
        if self.fixed_weight is not None:
            return self.fixed_weight if self.fixed_weight > 0 else math.inf
        pairs = self._pairs.get(group)
        return math.inf if pairs is None else pairs.weight(self.min_pairs, self.min_correlation)

    def waiting(self, session_id: str, group: str, model: ReturnModel, now: float) -> None:
        """The session (of agent type `group`) answered at `now`; it waits in a state whose gaps `model`
        describes."""
        if not self.enabled:
            return
        _, total, n, _, _, last = self._sessions.pop(session_id, (group, 0.0, 0, 0.0, 0.0, math.nan))
        self._sessions[session_id] = (group, total, n, now, model.quantile(0.5), last)
        if len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)

    def returned(self, session_id: str, now: float) -> None:
        got = self._sessions.get(session_id)
        if got is None or got[4] <= 0:
            return
        group, total, n, since, median, last = got
        r = math.log(max(now - since, 1e-3) / median)
        if not math.isnan(last):
            pairs = self._pairs.pop(group, None) or _Pairs()
            self._pairs[group] = pairs
            if len(self._pairs) > self.max_groups:
                self._pairs.popitem(last=False)
            pairs.add(last, r)
        self._sessions[session_id] = (group, total + r, n + 1, since, 0.0, r)

    def scale(self, session_id: str) -> float:
        got = self._sessions.get(session_id)
        if got is None or got[2] == 0:
            return 1.0
        w = self.weight(got[0])
        return 1.0 if math.isinf(w) else math.exp(got[1] / (got[2] + w))

    def forget(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
