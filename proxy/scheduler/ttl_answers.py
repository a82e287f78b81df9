"""The arithmetic of `predicted-ttl-retention` (proxy/scheduler/plugins/predicted_ttl.py, whose docstring
states the contract), in a plain class mypyc compiles (setup.py): asked twice on every call of the `saga`
policy (at dispatch and at finish), it reads only the predictor (compiled) and numbers, so the plugin, whose
params are a msgspec Struct and which stays pure Python, hands it everything as plain values once.

Same answers as the plugin computed itself before, bit for bit (tests/predictor/test_fast_paths.py).
"""

from __future__ import annotations

import math

from predictor import Predictor
from predictor.return_model import ReturnModel


class TtlAnswers:
    """(TTL, priority) at dispatch and release-or-keep at finish, for one plugin instance."""

    def __init__(
        self,
        ttl_quantile: float,
        max_ttl_s: float,
        min_return_probability: float,
        cold_ttl_s: float | None,
        long_gap_s: float | None,
        priority_base_s: float | None,
        priority_levels: int,
        release_answer_gap_s: float | None,
    ) -> None:
        self.ttl_quantile = ttl_quantile
        self.max_ttl_s = max_ttl_s
        self.min_return_probability = min_return_probability
        self.cold_ttl_s = cold_ttl_s
        self.long_gap_s = long_gap_s
        self.priority_base_s = priority_base_s
        self.priority_levels = priority_levels
        self.release_answer_gap_s = release_answer_gap_s
        self.predictor: Predictor | None = None
        self.priority_for = ""  # the request id whose TTL was sized last, and its priority
        self.priority: int | None = None

    def retain_ttl_s(self, request_id: str, session_id: str) -> float | None:
        self.priority_for = request_id
        self.priority = None
        predictor = self.predictor
        got = (
            predictor.return_model_after_call(session_id, max_gap_s=self.long_gap_s)
            if predictor is not None
            else None
        )
        if got is None or got[1] == "prior":
            return self.cold_ttl_s
        model = got[0]
        # The predictor shares one model between the calls of a state until its graph has learned more, so
        # most calls ask a model already answered: the answer is kept on the model, and goes with it.
        answer = model.ttl_answer if model.asked_by is self else None
        if answer is None:
            answer = model.ttl_answer = self.answer(model)
            model.asked_by = self
        ttl, priority = answer
        if priority is not None:
            self.priority = priority
        return ttl

    def answer(self, model: ReturnModel) -> tuple[float | None, int | None]:
        """The TTL (None: no retention) and priority (None: the call's own) for a session with `model`."""
        p_return = model.p_return()
        if p_return < self.min_return_probability:
            return None, None
        priority: int | None = None
        base = self.priority_base_s
        if base is not None:
            next_use = model.quantile(0.5) / p_return
            level = 1 + math.floor(math.log2(max(next_use / base, 1.0)))
            priority = min(level, self.priority_levels)
        return min(max(model.quantile(self.ttl_quantile), 1e-3), self.max_ttl_s), priority

    def retain_priority(self, request_id: str) -> int | None:
        return self.priority if request_id == self.priority_for else None

    def release_after(self, session_id: str, finish_reason: str, tool_names: tuple[str, ...]) -> bool:
        answer_gap_s = self.release_answer_gap_s
        predictor = self.predictor
        if answer_gap_s is None or predictor is None:
            return False
        got = predictor.return_model(session_id)
        if got is None or got[1] == "prior":  # nothing learned about where the answer left it: keep the TTL
            return False
        model = got[0]
        if model.p_return() < self.min_return_probability:
            return True
        median_gap = model.quantile(0.5)
        long_gap_s = self.long_gap_s
        if long_gap_s is not None and median_gap > long_gap_s:
            return True
        answered = finish_reason == "stop" and not tool_names  # handed back, not a tool call
        return answered and median_gap > answer_gap_s
