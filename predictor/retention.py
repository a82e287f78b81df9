"""SAGA's KV retention policy: after each call, keep the session's prefix or not, for how long, and what to
give up first under pressure — an online approximation of Bélády's policy built on the predictor.

After a call ends the predictor gives the session's `ReturnModel` (will it come back, and when). The policy
- does not pin a prefix whose session will probably not return (`p_return < min_return_probability`): it
  stays cached, unpinned, and goes first;
- pins the others for a TTL: the `ttl_quantile` of the predicted return gap, capped at `max_ttl_s`, shrunk as
  the cache fills (pressure m from `pressure_start` to full: TTL x (1 - m / 2)). Past its TTL a prefix is only
  cached and goes before every pinned one (as vLLM's LRU treats unpinned blocks);
- under pressure gives up the pinned prefix whose next use is furthest away as predicted now: the
  `next_use_quantile` of the return gap given the silence so far, minus that silence, divided by the
  probability it still returns (which falls as it stays quiet) and by the recompute weight of its prefix
  (1 + size / `attention_tokens`: prefill per token grows with the context it attends to; 0 turns it off).
  With `next_use` "mean" the conditional mean of the gap stands in for the quantile. With `long_gap_s` set, a
  prefix whose predicted median gap is longer (a person's think time) is not pinned at all (off by default:
  in the ledger's model the ranking already gives such a prefix up first, and leaving it unpinned measured
  worse in `saga bench predictor`).
  A person's think time after a final answer predicts a gap of minutes, so such a prefix goes before those of
  agents waiting on a tool.

Contract: pure; the capacity is enforced by a `RetentionLedger` ranking pinned prefixes with
`eviction_score`; `after_call` returns the decision and the sessions it evicted; `on_arrival` hands back (and
removes) the prefix a returning session finds.
"""

from __future__ import annotations

import math

import msgspec

from predictor.ledger import RetentionLedger
from predictor.predictor import Predictor
from predictor.return_model import ReturnModel


class RetentionParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    min_return_probability: float = 0.05
    ttl_quantile: float = 0.99
    next_use_quantile: float = 0.5
    max_ttl_s: float = 1800.0
    pressure_start: float = 0.7
    attention_tokens: float = 0.0
    next_use: str = "quantile"  # the predicted next use: "quantile" (`next_use_quantile`) or "mean"
    long_gap_s: float | None = None  # a predicted median gap above this (a person's think time): not pinned

    def validate(self) -> None:
        for name in ("ttl_quantile", "next_use_quantile", "min_return_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"retention: {name} must be in [0, 1]")
        if self.max_ttl_s <= 0:
            raise ValueError("retention: max_ttl_s must be > 0")
        if self.next_use not in ("quantile", "mean"):
            raise ValueError(f"retention: next_use must be 'quantile' or 'mean', got {self.next_use!r}")


class RetentionDecision(msgspec.Struct, frozen=True):
    session_id: str
    keep: bool  # pinned (False: cached unpinned, first to go)
    ttl_s: float
    next_use_in_s: float  # predicted wait until the next call, weighted (larger goes first under pressure)
    p_return: float = 0.0
    evicted: tuple[str, ...] = ()


class _Held:
    __slots__ = ("finished_at", "model", "weight")

    def __init__(self, model: ReturnModel, finished_at: float, weight: float) -> None:
        self.model, self.finished_at, self.weight = model, finished_at, weight


class PredictedRetention:
    def __init__(
        self, predictor: Predictor, capacity_tokens: int, params: RetentionParams | None = None
    ) -> None:
        self.predictor = predictor
        self.params = params or RetentionParams()
        self.params.validate()
        self.ledger = RetentionLedger(capacity_tokens, scorer=self.eviction_score)
        self._held: dict[str, _Held] = {}

    def pressure(self) -> float:
        cap = self.ledger.capacity
        if cap <= 0:
            return 1.0
        start = self.params.pressure_start
        return min(1.0, max(0.0, (self.ledger.used / cap - start) / max(1e-9, 1.0 - start)))

    def _weight(self, tokens: int) -> float:
        a = self.params.attention_tokens
        return 1.0 + (tokens / a if a > 0 else 0.0)

    def eviction_score(self, session_id: str, now: float) -> float:
        """Predicted wait until the session's next call, given its silence so far, divided by the chance it
        comes back and by the recompute weight of its prefix: the largest is given up first."""
        held = self._held.get(session_id)
        if held is None:
            return math.inf
        waited = max(0.0, now - held.finished_at)
        p_return = held.model.p_return(waited)
        if self.params.next_use == "mean":
            wait = held.model.conditional_mean(waited) - waited
        else:
            wait = held.model.conditional_quantile(self.params.next_use_quantile, waited) - waited
        return max(wait, 1e-6) / max(p_return * held.weight, 1e-9)

    def decide(self, session_id: str, now: float, tokens: int) -> RetentionDecision:
        """The TTL and eviction key for the `tokens`-long prefix the session's call left (no side effects)."""
        p = self.params
        got = self.predictor.return_model(session_id)
        if got is None:
            return RetentionDecision(session_id, False, 0.0, math.inf)
        model = got[0]
        p_return = model.p_return()
        next_use = model.quantile(p.next_use_quantile) / max(p_return * self._weight(tokens), 1e-9)
        if p_return < p.min_return_probability or (
            p.long_gap_s is not None and model.quantile(0.5) > p.long_gap_s
        ):
            return RetentionDecision(session_id, False, 0.0, next_use, p_return)
        ttl = min(model.quantile(p.ttl_quantile), p.max_ttl_s) * (1.0 - 0.5 * self.pressure())
        return RetentionDecision(session_id, True, ttl, next_use, p_return)

    def after_call(self, session_id: str, now: float, tokens: int) -> RetentionDecision:
        """Record the session's prefix (`tokens` long) in the ledger as decided; returns the decision."""
        d = self.decide(session_id, now, tokens)
        got = self.predictor.return_model(session_id)
        if got is not None:
            self._held[session_id] = _Held(got[0], now, self._weight(tokens))
        evicted = self.ledger.insert(session_id, tokens, now, d.ttl_s if d.keep else 0.0, d.next_use_in_s)
        for sid in evicted:
            self._held.pop(sid, None)
        return msgspec.structs.replace(d, evicted=tuple(evicted))

    def on_arrival(self, session_id: str, now: float) -> int:
        """The tokens of the session's prefix still cached (removed from the ledger: the call holds them)."""
        self.ledger.advance(now)
        self._held.pop(session_id, None)
        return self.ledger.take(session_id)

    def session_ended(self, session_id: str) -> None:
        self._held.pop(session_id, None)
        self.ledger.take(session_id)
