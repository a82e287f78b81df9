"""What a call costs, for charging tenants, and how much work a workflow has left, for ordering within one.

Contract (pure): `GpuCostModel.call_cost_s` estimates the GPU seconds a call takes: a per-call overhead,
prefill of its uncached tokens (linear and attention terms) and decode of its output. Its coefficients are
passed in (e.g. derived from a simulator profile by the harness), so nothing here knows the hardware.
`TokenCostModel` charges token counts as VTC does (input + 2 x output by default). `SessionHistory` guesses a
call's uncached tokens and output length from what the session did before (its previous prompt and answer are
assumed cached), a session's first call's output from its tenant's recent first calls (at least the default).
`RemainingWork` is what a predictor supplies; `CallsSoFarEstimate` is the default.
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class CallEstimate(msgspec.Struct, frozen=True):
    prompt_tokens: int
    uncached_tokens: int
    output_tokens: int


class GpuCostModel(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Defaults: Llama-3-8B on one H100 (simulator profile llama3-8b-h100), decode shared by ~8 sequences."""

    per_call_s: float = 0.0076
    prefill_token_s: float = 2.2e-5
    attention_pair_s: float = 1.2e-9  # per (new token x context token) in prefill
    decode_token_s: float = 0.001  # the step floor shared by the batch
    decode_context_token_s: float = 7e-8  # per decoded token per context token

    def call_cost_s(self, est: CallEstimate) -> float:
        new, context, out = est.uncached_tokens, est.prompt_tokens, est.output_tokens
        prefill = self.prefill_token_s * new + self.attention_pair_s * new * (context - new / 2.0)
        decode = out * (self.decode_token_s + self.decode_context_token_s * (context + out / 2.0))
        return self.per_call_s + max(0.0, prefill) + decode


class TokenCostModel(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    input_weight: float = 1.0
    output_weight: float = 2.0

    def call_cost_s(self, est: CallEstimate) -> float:  # a token count, named for the shared interface
        return self.input_weight * est.prompt_tokens + self.output_weight * est.output_tokens


class _SessionSeen(msgspec.Struct):
    context_tokens: int = 0  # last prompt + its answer: assumed cached
    output_tokens: int = 0
    calls: int = 0


# How fast a tenant's expected output (a new session's first call) follows its calls' outputs.
_TENANT_OUTPUT_WEIGHT = 0.2


class SessionHistory:
    """Per-session memory for estimates; bounded by the caller calling `forget` when a session ends. A
    session's first call is expected to write what its tenant's sessions' first calls wrote lately (a moving
    average), and never less than `default_output_tokens`: a tenant with long outputs that named a new
    session every call was charged 200 tokens of decode a call whatever it wrote, 8x the decode of a tenant
    charged alike (the thirteenth review); an average over every call, or without the floor, let a tenant
    pay less than that by padding with short calls (2,000-token first calls charged 48: the fourteenth).
    At most `max_tenants` tenants' averages are kept (the least recently updated go)."""

    def __init__(self, default_output_tokens: int = 200, max_tenants: int = 4096) -> None:
        self.default_output_tokens = default_output_tokens
        self.max_tenants = max_tenants
        self._seen: dict[str, _SessionSeen] = {}
        self._tenant_output: dict[str, float] = {}  # in least recently updated order

    def estimate(self, session_id: str, prompt_tokens: int, tenant: str = "") -> CallEstimate:
        seen = self._seen.get(session_id)
        if seen is None or seen.calls == 0:
            return CallEstimate(prompt_tokens, prompt_tokens, self.tenant_output(tenant))
        cached = min(seen.context_tokens, prompt_tokens)
        return CallEstimate(prompt_tokens, max(1, prompt_tokens - cached), seen.output_tokens)

    def tenant_output(self, tenant: str) -> int:
        """The output a new session of `tenant` is expected to write."""
        average = self._tenant_output.get(tenant)
        default = self.default_output_tokens
        return default if average is None else max(default, round(average))

    def finished(self, session_id: str, prompt_tokens: int, completion_tokens: int, tenant: str = "") -> None:
        seen = self._seen.setdefault(session_id, _SessionSeen())
        first = seen.calls == 0
        seen.context_tokens = prompt_tokens + completion_tokens
        seen.output_tokens = completion_tokens or self.tenant_output(tenant)
        seen.calls += 1
        if first and completion_tokens:  # (none: a call that failed or was cut wrote nothing to learn from)
            average = self._tenant_output.pop(tenant, None)
            self._tenant_output[tenant] = (
                float(completion_tokens)
                if average is None
                else average + _TENANT_OUTPUT_WEIGHT * (completion_tokens - average)
            )
            if len(self._tenant_output) > self.max_tenants:
                del self._tenant_output[next(iter(self._tenant_output))]

    def calls(self, session_id: str) -> int:
        seen = self._seen.get(session_id)
        return seen.calls if seen is not None else 0

    def forget(self, session_id: str) -> None:
        self._seen.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._seen)


class RemainingWork(Protocol):
    """Predicted work a workflow has left (any unit; only the order matters), given its next call."""

    def __call__(self, agent_type: str, calls_so_far: int, next_call_cost: float) -> float: ...


class CallsSoFarEstimate:
    """Without a predictor: a task is expected to make `expected_calls` calls of about its next call's cost,
    so one further along has less left (at least the call itself)."""

    def __init__(self, expected_calls: int = 30) -> None:
        self.expected_calls = expected_calls

    def __call__(self, agent_type: str, calls_so_far: int, next_call_cost: float) -> float:
        return max(1, self.expected_calls - calls_so_far) * next_call_cost
