"""SAGA's KV retention policy: after each call, keep the session's prefix or not, for how long, and what to
give up first under pressure — an online approximation of Bélády's policy built on the predictor.

After a call ends the predictor says how likely the session is to come back and when. The policy
- does not pin a prefix whose session will probably not return (`p_return < min_return_probability`, e.g. a
  task that looks finished) — it stays cached but goes first;
- pins the others for a TTL: the `ttl_quantile` of the predicted return gap, capped at `max_ttl_s`, shrunk as
  the cache fills (pressure m from `pressure_start` to full: TTL x (1 - m / 2)); a person's think time after a
  final answer has a long predicted gap, so such a prefix is pinned only when there is room, and goes first;
- under pressure gives up the pin whose predicted next use (the `next_use_quantile` of the gap) is furthest
  away, weighted by what a miss would cost: the gap is divided by p_return x (1 + size / `attention_tokens`)
  (prefill per token grows with the context it attends to; 0 turns the weight off).

Contract: pure; the capacity is enforced by a `RetentionLedger`; `after_call` returns the decision and the
sessions it evicted; `on_arrival` hands back (and removes) the prefix a returning session finds.
"""

from __future__ import annotations

import msgspec

from predictor.ledger import RetentionLedger
from predictor.predictor import Prediction, Predictor


class RetentionParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    min_return_probability: float = 0.2
    ttl_quantile: float = 0.9
    next_use_quantile: float = 0.5
    max_ttl_s: float = 300.0
    pressure_start: float = 0.7
    attention_tokens: float = 0.0

    def validate(self) -> None:
        for name in ("ttl_quantile", "next_use_quantile", "min_return_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"retention: {name} must be in [0, 1]")
        if self.max_ttl_s <= 0:
            raise ValueError("retention: max_ttl_s must be > 0")


class RetentionDecision(msgspec.Struct, frozen=True):
    session_id: str
    keep: bool  # pinned (False: cached unpinned, first to go)
    ttl_s: float
    next_use_at: float  # predicted (weighted): larger goes first under pressure
    evicted: tuple[str, ...] = ()


def _gap_at(pred: Prediction, q: float) -> float:
    """The predicted return gap at quantile q, interpolated between the predicted quantiles."""
    qs, gaps = pred.quantiles, pred.return_gap_s
    if q <= qs[0]:
        return gaps[0]
    for (q0, g0), (q1, g1) in zip(
        zip(qs, gaps, strict=True), zip(qs[1:], gaps[1:], strict=True), strict=False
    ):
        if q <= q1:
            return g0 + (g1 - g0) * (q - q0) / (q1 - q0)
    return gaps[-1]


class PredictedRetention:
    def __init__(
        self, predictor: Predictor, capacity_tokens: int, params: RetentionParams | None = None
    ) -> None:
        self.predictor = predictor
        self.params = params or RetentionParams()
        self.params.validate()
        self.ledger = RetentionLedger(capacity_tokens)

    def pressure(self) -> float:
        cap = self.ledger.capacity
        if cap <= 0:
            return 1.0
        start = self.params.pressure_start
        return min(1.0, max(0.0, (self.ledger.used / cap - start) / max(1e-9, 1.0 - start)))

    def decide(self, session_id: str, now: float, tokens: int) -> RetentionDecision:
        """The TTL and eviction key for the `tokens`-long prefix the session's call left (no side effects)."""
        p = self.params
        pred = self.predictor.predict(session_id, now)
        if pred is None or pred.p_return < p.min_return_probability:
            return RetentionDecision(session_id, False, 0.0, float("inf"))
        ttl = min(_gap_at(pred, p.ttl_quantile), p.max_ttl_s) * (1.0 - 0.5 * self.pressure())
        weight = pred.p_return * (1.0 + (tokens / p.attention_tokens if p.attention_tokens > 0 else 0.0))
        next_use = now + _gap_at(pred, p.next_use_quantile) / max(weight, 1e-6)
        return RetentionDecision(session_id, True, ttl, next_use)

    def after_call(self, session_id: str, now: float, tokens: int) -> RetentionDecision:
        """Record the session's prefix (`tokens` long) in the ledger as decided; returns the decision."""
        d = self.decide(session_id, now, tokens)
        evicted = self.ledger.insert(session_id, tokens, now, d.ttl_s if d.keep else 0.0, d.next_use_at)
        return msgspec.structs.replace(d, evicted=tuple(evicted))

    def on_arrival(self, session_id: str, now: float) -> int:
        """The tokens of the session's prefix still cached (removed from the ledger: the call holds them)."""
        self.ledger.advance(now)
        return self.ledger.take(session_id)

    def session_ended(self, session_id: str) -> None:
        self.ledger.take(session_id)
