"""Reference policies and statistics for `saga bench predictor` that say how much information a retention
policy would need to come close to Bélády, and whether the request stream carries it.

- `EndOraclePolicy`: the state-oracle's ranking (each state's true gap distribution, in hindsight) told, in
  addition, whether each session comes back at all (a session's last call is dropped first; a returning one
  is ranked on its state's gaps with no end probability). What perfect knowledge of session ends is worth.
- `NoisyBeladyPolicy`: Bélády told each gap only up to a log-normal factor e^N(0, sigma) (the session's
  next arrival at now + gap x noise; never-again stays never). How precisely the time of each next use must
  be known for a given ratio; compare sigma with the spread of the workload's gap distributions
  (e.g. webarena's browser actions 0.91, a person's think time 1.26).
- `gap_information`: within a state (agent type and tool or finish reason), the Spearman rank correlation
  of a gap's log deviation from its state's mean log gap with what a session shows online before the gap
  starts: its previous gap's deviation, its context size, its calls so far. Near 0 means per-session
  features cannot tell which waiting session of a state comes back first.

Contract: pure functions of the trace; the policies follow the bench's `CachePolicy` shape.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from typing import Any

from loadtests.bench.predictor import BeladyPolicy, StateOraclePolicy, TraceCall, _spearman, _state
from predictor.return_model import ReturnModel


class EndOraclePolicy(StateOraclePolicy):
    def __init__(self, capacity: int, sessions: Sequence[Sequence[TraceCall]]) -> None:
        super().__init__(capacity, sessions)
        self.name = "end-oracle"
        # The same gap distributions with no end: whether this session ends is told per call.
        self._returning = {k: ReturnModel(g, 0.0) for k, g in self.gap_sketches.items()}

    def finish(self, call: TraceCall, now: float) -> None:
        model = self.never if call.last else self._returning.get(_state(call), self.never)
        self._held[call.session_id] = (model, now)
        for sid in self.ledger.insert(call.session_id, call.prompt + call.output, now, math.inf, 0.0):
            self._held.pop(sid, None)


class NoisyBeladyPolicy(BeladyPolicy):
    def __init__(self, capacity: int, sigma: float, seed: int = 0) -> None:
        super().__init__(f"belady-noise-{sigma:g}", capacity)
        self.sigma = sigma
        self._rng = random.Random(seed)

    def finish(self, call: TraceCall, now: float) -> None:
        key = call.next_arrival
        if math.isfinite(key):
            key = now + (key - now) * math.exp(self._rng.gauss(0.0, self.sigma))
        self.ledger.insert(call.session_id, call.prompt + call.output, now, math.inf, key)


def gap_information(sessions: Sequence[Sequence[TraceCall]]) -> dict[str, Any]:
    """Spearman of each gap's deviation from its state's mean log gap with per-session features."""
    logs: dict[tuple[str, str], list[float]] = {}
    for s in sessions:
        for c in s:
            if not c.last:
                logs.setdefault(_state(c), []).append(_log_gap(c))
    mean = {k: statistics.mean(v) for k, v in logs.items()}
    dev: list[float] = []
    prev: list[float] = []
    context: list[float] = []
    calls: list[float] = []
    for s in sessions:
        last: float | None = None
        for c in s:
            if c.last:
                continue
            d = _log_gap(c) - mean[_state(c)]
            if last is not None:
                dev.append(d)
                prev.append(last)
                context.append(c.prompt + c.output)
                calls.append(c.index + 1)
            last = d
    return {
        "gaps": len(dev),
        "spearman_previous_gap": _spearman(dev, prev),
        "spearman_context_tokens": _spearman(dev, context),
        "spearman_calls_so_far": _spearman(dev, calls),
    }


def _log_gap(c: TraceCall) -> float:
    return math.log(max(1e-3, c.next_arrival - c.finish))
