"""SAGA's KV retention policy: after each call, keep the session's prefix or not, for how long, and what to
give up first under pressure — an online approximation of Bélády's policy built on the predictor.

After a call ends the predictor gives the session's `ReturnModel` (will it come back, and when). The policy
- ranks every prefix it holds, as the silence goes on, by the most returns per second of holding it that
  keeping it can still earn (`next_use` "index": `ReturnModel.hit_rate`, the max over horizons T of P(back by
  T | silent so far) / E[seconds held until then], a session that never returns held to T), divided by the
  recompute weight of its prefix (1 + size / `attention_tokens`; 0 turns it off: in the ledger's model what a
  prefix saves is proportional to the blocks it holds, so size cancels). Under pressure the lowest goes first:
  the stand-in for Bélády's "furthest next use" when only its distribution is known. A session in a state
  that usually returns within milliseconds loses its claim once it has been silent for seconds; a person's
  think time (minutes) ranks below an agent's tool wait, and an agent's final answer (its state ends nearly
  every session) goes first. "quantile" ranks instead by the `next_use_quantile` of the gap left given the
  silence, over P(return) (the default before; "mean": the conditional mean);
- pins each prefix for a TTL, the `ttl_quantile` of the predicted gap (1.0 by default: the longest gap seen),
  capped at `max_ttl_s` and shrunk as the cache fills (pressure m from `pressure_start` to full: TTL x
  (1 - m / 2); off at 1.0). Past its TTL a prefix is only cached and goes before every pinned one (as vLLM's
  LRU treats unpinned blocks); a session whose `p_return < min_return_probability` (0 by default) is not
  pinned at all; with `long_gap_s` set, nor one whose predicted median gap is longer. The TTL tier and these
  cut-offs were the defaults before "index" and measured worse with it (docs/results/predictor.md).

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
from predictor.session_scale import SessionGapScale


class RetentionParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    min_return_probability: float = 0.0
    ttl_quantile: float = 1.0
    next_use_quantile: float = 0.5
    max_ttl_s: float = 1800.0
    pressure_start: float = 1.0
    attention_tokens: float = 0.0
    # The order under pressure: "index" (fewest returns per second held, `ReturnModel.hit_rate`), "quantile"
    # (furthest `next_use_quantile` of the gap left / P(return)) or "mean" (the conditional mean instead).
    next_use: str = "index"
    long_gap_s: float | None = None  # a predicted median gap above this (a person's think time): not pinned
    # Per-session gap scale (`next_use` "index" only): a session whose past gaps ran k times its states'
    # medians is expected to keep doing so (a slow machine, a slow person); its gaps so far are shrunk
    # towards scale 1 by this many pseudo-gaps. None: learned (`SessionGapScale`: off while the stream
    # shows no per-session correlation of gaps, as in the generated workloads); 0: off.
    session_scale_weight: float | None = None

    def validate(self) -> None:
        for name in ("ttl_quantile", "next_use_quantile", "min_return_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"retention: {name} must be in [0, 1]")
        if self.max_ttl_s <= 0:
            raise ValueError("retention: max_ttl_s must be > 0")
        if self.session_scale_weight is not None and self.session_scale_weight < 0:
            raise ValueError("retention: session_scale_weight must be >= 0")
        if self.next_use not in ("quantile", "mean", "index"):
            raise ValueError(
                f"retention: next_use must be 'quantile', 'mean' or 'index', got {self.next_use!r}"
            )


class RetentionDecision(msgspec.Struct, frozen=True):
    session_id: str
    keep: bool  # pinned (False: cached unpinned, first to go)
    ttl_s: float
    next_use_in_s: float  # predicted wait until the next call, weighted (larger goes first under pressure)
    p_return: float = 0.0
    evicted: tuple[str, ...] = ()


class _Held:
    __slots__ = ("finished_at", "model", "scale", "weight")

    def __init__(self, model: ReturnModel, finished_at: float, weight: float, scale: float = 1.0) -> None:
        self.model, self.finished_at, self.weight, self.scale = model, finished_at, weight, scale


class PredictedRetention:
    def __init__(
        self, predictor: Predictor, capacity_tokens: int, params: RetentionParams | None = None
    ) -> None:
        self.predictor = predictor
        self.params = params or RetentionParams()
        self.params.validate()
        self.ledger = RetentionLedger(capacity_tokens, scorer=self.eviction_score)
        self._held: dict[str, _Held] = {}
        self._scale = SessionGapScale(self.params.session_scale_weight)

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
        if self.params.next_use == "index":
            # Gaps k times the state's: the silence counts 1/k as much, and returns come k times slower.
            k = held.scale
            return k / max(held.model.hit_rate(waited / k) * held.weight, 1e-12)
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
            live = self.predictor.sessions.get(session_id)
            self._scale.waiting(session_id, live.agent_type if live is not None else "", got[0], now)
            self._held[session_id] = _Held(got[0], now, self._weight(tokens), self._scale.scale(session_id))
        evicted = self.ledger.insert(session_id, tokens, now, d.ttl_s if d.keep else 0.0, d.next_use_in_s)
        for sid in evicted:
            self._held.pop(sid, None)
        return msgspec.structs.replace(d, evicted=tuple(evicted))

    def on_arrival(self, session_id: str, now: float) -> int:
        """The tokens of the session's prefix still cached (removed from the ledger: the call holds them)."""
        self.ledger.advance(now)
        self._held.pop(session_id, None)
        self._scale.returned(session_id, now)
        return self.ledger.take(session_id)

    def session_ended(self, session_id: str) -> None:
        self._held.pop(session_id, None)
        self._scale.forget(session_id)
        self.ledger.take(session_id)
