"""The predictor's msgspec Structs: its configuration (`PredictorConfig`, `Priors`, `GraphLimits`) and its
answers (`Prediction`, `RemainingWork`).

They live apart from graph.py and predictor.py, which setup.py compiles with mypyc: a Struct's class keywords
(`frozen`, `forbid_unknown_fields`) do not survive mypyc, so Struct classes stay in pure-Python modules.
"""

from __future__ import annotations

import msgspec


class GraphLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_nodes: int = 64
    max_edges_per_node: int = 16
    decay_weight: float = 4000.0  # a node's counts halve past this weight
    prior_end: float = 1 / 30  # end probability before evidence (tasks of ~30 calls)
    prior_weight: float = 2.0
    merge_refresh: int = 16  # `merged` sums over other key lists are rebuilt after this many updates


class RemainingWork(msgspec.Struct, frozen=True):
    """Expected work after leaving a node: calls, prompt tokens added, output tokens."""

    calls: float
    new_tokens: float
    output_tokens: float


class Priors(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a cold start assumes: a log-normal gap and fixed token counts."""

    gap_median_s: float = 1.0
    gap_p90_s: float = 20.0
    end_probability: float = 1 / 30
    growth_tokens: float = 1000.0
    output_tokens: float = 250.0
    remaining_calls: float = 15.0


class PredictorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_agent_types: int = 64
    max_sessions: int = 100_000
    max_ghosts: int = 10_000
    min_samples: float = 8.0
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9, 0.99)
    horizon_factor: float = 2.0
    min_horizon_s: float = 30.0
    max_horizon_s: float = 3600.0
    end_scan_interval_s: float = 1.0
    # Service-time model for `remaining_service_s`: seconds per prompt token prefilled and per output token.
    prefill_s_per_token: float = 2.2e-5
    decode_s_per_token: float = 0.01
    max_agent_type_chars: int = 128
    # How remaining calls are predicted: "residual" (mean residual life of the type's session lengths, times
    # P(return)) or "chain" (absorbing Markov chain over the graph).
    remaining_model: str = "residual"
    graph: GraphLimits = msgspec.field(default_factory=GraphLimits)
    priors: Priors = msgspec.field(default_factory=Priors)


class Prediction(msgspec.Struct, frozen=True):
    """What the graph expects of a session that is waiting between calls (gaps counted from its answer)."""

    session_id: str
    agent_type: str
    node: str
    source: str  # "node", "tool", "graph" or "prior"
    cold: bool
    waited_s: float
    p_return: float  # probability the session makes another call, given it has been silent `waited_s`
    p_end: float  # 1 - p_return
    quantiles: tuple[float, ...]
    return_gap_s: tuple[float, ...]  # the gap (from the answer) by which it returns with those probabilities
    next_prompt_tokens: float
    next_output_tokens: float
    remaining_calls: float
    remaining_output_tokens: float
    remaining_service_s: float
    peak_prompt_tokens: float = 0.0  # the expected prompt of its last call (last prompt + growth to come)
