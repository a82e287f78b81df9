"""What a re-prefill costs on the replicas, learned from the calls' first tokens.

Contract: `recompute_s(tokens)` is the seconds a replica takes to prefill `tokens` tokens from scratch:
tokens x `s_per_token` x (1 + tokens / (2 x `attention_tokens`)): linear layers, plus attention over the
causal context (`attention_tokens`: the context at which a token's attention costs as much as its linear
layers; ~18k tokens for Llama-3-8B on an H100 in simulator/cost_model.py, ~39k for 70B TP4 on A100s).
`s_per_token` is None (unknown: `recompute_s` answers None) until `_MIN_SAMPLES` calls were seen, then a
low quantile (`_QUANTILE`) of the recent calls' time to first token over the tokens they computed
(weighted the same way): a call's time to first token counts its queue too, so the low quantile is the
calls that did not wait. Only calls that computed at least `_MIN_TOKENS` tokens and report cached tokens
are counted (a backend that reports none would make every call look fully computed). Bounded: the last
`_WINDOW` samples. Sans-IO: the caller passes the measured times.
"""

from __future__ import annotations

import math
from collections import deque

_WINDOW = 64
_MIN_SAMPLES = 8
_MIN_TOKENS = 1024  # below this a call's first token is mostly step overhead and queue
_QUANTILE = 0.1
_REFRESH = 8  # re-sort the window every this many samples


class PrefillRate:
    def __init__(self, attention_tokens: float) -> None:
        self.s_per_token: float | None = None
        self.attention_tokens = attention_tokens
        self.samples: deque[float] = deque(maxlen=_WINDOW)
        self._fresh = 0

    def observe(self, ttft_s: float, prompt_tokens: int, cached_tokens: int) -> None:
        """A call's time from arrival to first token, its prompt and how much of it was cached."""
        computed = prompt_tokens - cached_tokens
        if cached_tokens <= 0 or computed < _MIN_TOKENS or not 0 < ttft_s < math.inf:  # NaN too
            return
        work = computed * (1.0 + (cached_tokens + computed / 2.0) / self.attention_tokens)
        self.samples.append(ttft_s / work)
        self._fresh += 1
        if self._fresh >= _REFRESH and len(self.samples) >= _MIN_SAMPLES:
            self._fresh = 0
            ordered = sorted(self.samples)
            self.s_per_token = ordered[int(_QUANTILE * (len(ordered) - 1))]

    def recompute_s(self, tokens: int) -> float | None:
        rate = self.s_per_token
        return None if rate is None else tokens * rate * (1.0 + tokens / (2.0 * self.attention_tokens))
