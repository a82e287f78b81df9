"""Agent Execution Graphs, learned online from the request stream, and the KV retention policy built on them.

Pure: no I/O, no clock of its own; the scheduler core (proxy/scheduler) feeds it events and asks it questions.
"""

import saga_native  # noqa: F401  (first: the compiled modules' stale-build guard)
from predictor.graph import AgentGraph
from predictor.ledger import RetentionLedger
from predictor.predictor import Predictor
from predictor.retention import PredictedRetention, RetentionDecision, RetentionParams
from predictor.structs import GraphLimits, Prediction, PredictorConfig, Priors

__all__ = [
    "AgentGraph",
    "GraphLimits",
    "PredictedRetention",
    "Prediction",
    "Predictor",
    "PredictorConfig",
    "Priors",
    "RetentionDecision",
    "RetentionLedger",
    "RetentionParams",
]
