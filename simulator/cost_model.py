"""GPU cost model of one vLLM engine step, and the hardware/model profiles it is calibrated for.

Contract: `step_time_s` is a pure function of a profile and what one continuous-batching step holds:
    fixed + linear + prefill attention + decode attention   (milliseconds, returned in seconds)
- fixed: weight streaming floor plus per-step overhead, paid by every non-empty step;
- linear: `prefill_token_ms` per token beyond the first `linear_knee_tokens` of the step (below the knee the
  matmuls are memory-bound and hidden in the fixed floor);
- prefill attention: `prefill_attention_ms` per (new token x context token), counting causal context;
- decode attention: `decode_ms_per_kctx` per 1k context tokens of every sequence that decodes this step.
Profiles live in `PROFILES` (name -> Profile); add one by adding an entry.
"""

from __future__ import annotations

import msgspec


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """A model on a machine: KV capacity, scheduler limits and step-time coefficients."""

    name: str
    source: str  # where the numbers come from
    block_size: int = 16
    kv_capacity_tokens: int
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    max_model_len: int
    step_fixed_ms: float
    prefill_token_ms: float
    linear_knee_tokens: int = 128
    prefill_attention_ms: float
    decode_ms_per_kctx: float

    @property
    def num_gpu_blocks(self) -> int:
        return self.kv_capacity_tokens // self.block_size

    def validate(self) -> None:
        """Raise ValueError when the profile could never run a max-length request."""
        if self.block_size <= 0 or self.num_gpu_blocks <= 0:
            raise ValueError(f"profile {self.name}: needs a positive block size and KV capacity")
        if self.max_model_len > self.num_gpu_blocks * self.block_size:
            raise ValueError(f"profile {self.name}: max_model_len exceeds the KV capacity")
        if self.max_num_batched_tokens <= 0 or self.max_num_seqs <= 0:
            raise ValueError(f"profile {self.name}: needs a positive token budget and sequence cap")


def step_time_s(
    profile: Profile, *, num_tokens: int, attention_pairs: float = 0.0, decode_context_tokens: int = 0
) -> float:
    """Seconds one step takes. `num_tokens`: tokens computed in the step (prefill chunks + one per decoding
    sequence); `attention_pairs`: sum over prefill chunks of new x context token pairs (see
    `prefill_attention_pairs`); `decode_context_tokens`: summed context length of the decoding sequences.
    An empty step (no tokens) takes no time."""
    if num_tokens <= 0:
        return 0.0
    ms = (
        profile.step_fixed_ms
        + profile.prefill_token_ms * max(0, num_tokens - profile.linear_knee_tokens)
        + profile.prefill_attention_ms * attention_pairs
        + profile.decode_ms_per_kctx * decode_context_tokens / 1000.0
    )
    return ms / 1000.0


def prefill_attention_pairs(num_new: int, num_context: int) -> float:
    """Token pairs a prefill chunk of `num_new` tokens attends to after `num_context` tokens (causal)."""
    return num_new * (num_context + num_new / 2.0)


PROFILES: dict[str, Profile] = {
    "llama3-8b-h100": Profile(
        name="llama3-8b-h100",
        source=(
            "WORKLOADS.md section 2: Llama-3-8B BF16 on one H100 80GB, vLLM gpu-memory-utilization 0.9; "
            "128 KiB KV per token, ~430k tokens; step floor 7.6 ms, 0.022 ms/prefill token, "
            "1.2e-6 ms per attention pair, 0.07 ms per 1k decode context tokens; Llama 3.1 context 128k"
        ),
        block_size=16,
        kv_capacity_tokens=430_080,
        max_num_batched_tokens=8192,
        max_num_seqs=256,
        max_model_len=131_072,
        step_fixed_ms=7.6,
        prefill_token_ms=0.022,
        linear_knee_tokens=128,
        prefill_attention_ms=1.2e-6,
        decode_ms_per_kctx=0.07,
    ),
    "tiny-cpu": Profile(
        name="tiny-cpu",
        source=(
            "REFERENCE.md: vLLM CPU backend with a tiny random Llama (2 layers, hidden 128), block size 128, "
            "--max-model-len 2048, ~50 ms per 1000-token prompt; KV kept small (32 blocks) so eviction and "
            "preemption show up with a few requests"
        ),
        block_size=128,
        kv_capacity_tokens=32 * 128,
        max_num_batched_tokens=2048,
        max_num_seqs=64,
        max_model_len=2048,
        step_fixed_ms=2.0,
        prefill_token_ms=0.046,
        linear_knee_tokens=0,
        prefill_attention_ms=3e-6,
        decode_ms_per_kctx=0.05,
    ),
}


def get_profile(name: str) -> Profile:
    """The profile called `name`; raises ValueError naming the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown simulator profile {name!r}; known: {sorted(PROFILES)}") from None
